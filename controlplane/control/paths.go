package control

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

// Paths of a pair of nodes, in the order the controller tries them: the nodes'
// own endpoints, a UDP relay session, the framed relay. They are also the values of
// PathReport.failed and RelayPath.mode.
const (
	pathDirect uint32 = 0
	pathUDP    uint32 = 1
	pathFramed uint32 = 2
)

// pairPath is how two nodes of a tenant reach each other when it is not direct.
// Side A is the node with the smaller ID. It lives in memory only: after a
// controller restart every pair starts direct again and agents report anew.
type pairPath struct {
	tenantID string
	a, b     string // node IDs, a < b
	level    uint32
	relayID  string
	region   string // the relay's: a framed pair goes to every relay of the region
	// For pathUDP: the session, one relay port and one token per side.
	session uint64
	ports   [2]uint16
	tokens  [2][32]byte
}

func (p *pairPath) side(nodeID string) uint32 {
	if nodeID == p.a {
		return 0
	}
	return 1
}

func (p *pairPath) other(nodeID string) string {
	if nodeID == p.a {
		return p.b
	}
	return p.a
}

// view is the RelayPath that node nodeID of the pair gets.
func (p *pairPath) view(nodeID string) *controlpb.RelayPath {
	rp := &controlpb.RelayPath{Mode: p.level, RelayId: p.relayID}
	if p.level == pathUDP {
		s := p.side(nodeID)
		rp.SessionId, rp.Side, rp.Port, rp.Token = p.session, s, uint32(p.ports[s]), p.tokens[s][:]
	}
	return rp
}

func (p *pairPath) sessionView() *controlpb.RelaySession {
	return &controlpb.RelaySession{
		Id: p.session, PortA: uint32(p.ports[0]), PortB: uint32(p.ports[1]),
		TokenA: p.tokens[0][:], TokenB: p.tokens[1][:],
	}
}

func (p *pairPath) pairView() *controlpb.RelayPair {
	return &controlpb.RelayPair{TenantId: p.tenantID, NodeA: p.a, NodeB: p.b}
}

// withRelay is base as node viewerID sees it: with the pair's relay path if the
// pair has one. base is shared by every viewer and never changed.
func (h *hub) withRelay(viewerID string, base *controlpb.Peer) *controlpb.Peer {
	pp := h.paths[viewerID][base.NodeId]
	if pp == nil {
		return base
	}
	return &controlpb.Peer{
		NodeId: base.NodeId, Name: base.Name, NodeKey: base.NodeKey,
		Endpoints: base.Endpoints, AllowedIps: base.AllowedIps, Relay: pp.view(viewerID),
	}
}

// escalate moves the pair (from, to) to its next path because from reported that
// path failed, and tells both nodes and the relays. It returns what it did, for
// the log. A report about a path the pair no longer uses is stale and ignored.
func (h *hub) escalate(w *state.World, tenantID, from, to string, failed uint32) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.st != nil {
		w = h.st.World()
	}
	t := w.Tenant(tenantID)
	if t == nil {
		return "tenant gone"
	}
	a, b := t.Nodes.ByID(from), t.Nodes.ByID(to)
	if a == nil || b == nil || !h.sees(a, b) {
		return "not peers"
	}
	cur := h.paths[from][to]
	level := pathDirect
	if cur != nil {
		level = cur.level
	}
	switch {
	case failed != level:
		return fmt.Sprintf("stale: the pair is on path %d", level)
	case level == pathFramed:
		return "no path left after the framed relay"
	}
	next := h.choosePath(w, tenantID, a, b, cur)
	if next == nil {
		return "no connected relay can carry the pair"
	}
	if cur != nil {
		h.dropPath(cur)
	}
	h.addPath(next)
	h.repeer(t, next)
	if next.level == pathUDP {
		return fmt.Sprintf("UDP relay session %016x on relay %s", next.session, next.relayID)
	}
	return "framed relay " + next.relayID
}

// choosePath picks the pair's next path after cur (nil: direct): a UDP session on
// a connected relay with two free ports, else the framed relay of a connected
// relay that has a URL for it. Relays are tried home relay first (a's, then b's),
// then by name, so a pair's choice is deterministic.
func (h *hub) choosePath(w *state.World, tenantID string, a, b *model.Node, cur *pairPath) *pairPath {
	var relays []*model.Relay
	for id := range h.relays {
		if r := w.Relays.ByID(id); r != nil {
			relays = append(relays, r)
		}
	}
	home := func(r *model.Relay) int {
		switch {
		case a.HomeRelay != "" && (a.HomeRelay == r.ID || a.HomeRelay == r.Name):
			return 0
		case b.HomeRelay != "" && (b.HomeRelay == r.ID || b.HomeRelay == r.Name):
			return 1
		}
		return 2
	}
	slices.SortFunc(relays, func(x, y *model.Relay) int {
		return cmp.Or(cmp.Compare(home(x), home(y)), cmp.Compare(x.Name, y.Name))
	})
	p := &pairPath{tenantID: tenantID, a: min(a.ID, b.ID), b: max(a.ID, b.ID)}
	if cur == nil {
		for _, r := range relays {
			if ports, ok := h.freePorts(r); ok {
				p.level, p.relayID, p.region, p.ports = pathUDP, r.ID, r.Region, ports
				p.session = randUint64()
				rand.Read(p.tokens[0][:])
				rand.Read(p.tokens[1][:])
				return p
			}
		}
	}
	for _, r := range relays {
		if r.TLSURL != "" || r.WSURL != "" {
			p.level, p.relayID, p.region = pathFramed, r.ID, r.Region
			return p
		}
	}
	return nil
}

// freePorts finds two ports of r's range that no session uses.
func (h *hub) freePorts(r *model.Relay) ([2]uint16, bool) {
	used := h.ports[r.ID]
	n := int(r.UDPPortMax) - int(r.UDPPortMin) + 1
	start := int(randUint64() % uint64(n))
	var out [2]uint16
	got := 0
	for i := 0; i < n && got < 2; i++ {
		port := r.UDPPortMin + uint16((start+i)%n)
		if _, taken := used[port]; !taken {
			out[got] = port
			got++
		}
	}
	return out, got == 2
}

func randUint64() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// addPath records p and tells its relay.
func (h *hub) addPath(p *pairPath) {
	for _, pair := range [][2]string{{p.a, p.b}, {p.b, p.a}} {
		m := h.paths[pair[0]]
		if m == nil {
			m = map[string]*pairPath{}
			h.paths[pair[0]] = m
		}
		m[pair[1]] = p
	}
	if p.level == pathUDP {
		used := h.ports[p.relayID]
		if used == nil {
			used = map[uint16]struct{}{}
			h.ports[p.relayID] = used
		}
		used[p.ports[0]], used[p.ports[1]] = struct{}{}, struct{}{}
	}
	for _, ro := range h.pathRelays(p) {
		ro.addPath(p)
	}
}

// dropPath forgets p and tells its relay; the nodes' views are the caller's.
func (h *hub) dropPath(p *pairPath) {
	for _, pair := range [][2]string{{p.a, p.b}, {p.b, p.a}} {
		if h.paths[pair[0]][pair[1]] == p {
			delete(h.paths[pair[0]], pair[1])
			if len(h.paths[pair[0]]) == 0 {
				delete(h.paths, pair[0])
			}
		}
	}
	if p.level == pathUDP {
		delete(h.ports[p.relayID], p.ports[0])
		delete(h.ports[p.relayID], p.ports[1])
	}
	for _, ro := range h.pathRelays(p) {
		ro.dropPath(p)
	}
}

// pathRelays are the connected relays that carry p: the relay of a UDP session;
// every relay of the region for a framed pair (its nodes may land on different
// relays of the region, which forward to each other over their mesh).
func (h *hub) pathRelays(p *pairPath) []*relayOutbox {
	if p.level == pathFramed {
		return h.regionRelays(p.region)
	}
	if ro := h.relays[p.relayID]; ro != nil {
		return []*relayOutbox{ro}
	}
	return nil
}

// unpair drops the path between a and b, if any, because they stopped being
// peers; their outboxes drop each other on their own.
func (h *hub) unpair(a, b string) {
	if p := h.paths[a][b]; p != nil {
		h.dropPath(p)
	}
}

// dropNodePaths drops every path of a deleted node.
func (h *hub) dropNodePaths(nodeID string) {
	for _, p := range h.paths[nodeID] {
		h.dropPath(p)
	}
}

// repeer sends both nodes of p their view of each other as it is now (with or
// without a relay), if they are connected and have each other.
func (h *hub) repeer(t *state.Tenant, p *pairPath) {
	for _, id := range []string{p.a, p.b} {
		o, other := h.byNode[id], t.Nodes.ByID(p.other(id))
		if o != nil && other != nil && hasKnown(o, other.ID) {
			o.putPeer(h.withRelay(id, peerView(other)))
		}
	}
}

// relaysChanged drops the paths on relays that are gone from w and sends every
// connected agent the new relay map; a connected relay that was deleted or whose
// key changed is told goodbye.
func (h *hub) relaysChanged(w *state.World) int {
	rm := &controlpb.RelayMap{Relays: relayInfos(w)}
	touched := 0
	for _, o := range h.byNode {
		o.setRelayMap(rm)
		touched++
	}
	for id, ro := range h.relays {
		switch r := w.Relays.ByID(id); {
		case r == nil || !r.RelayKey.Equal(ro.key):
			ro.goodbye(CodeRelayUnknown, "relay was deleted or its key changed")
		case r.Region != ro.region:
			ro.goodbye(CodeReplaced, "relay moved to another region; reconnect for its new configuration")
		default:
			ro.setMesh(&controlpb.RelayMap{Relays: meshOf(w, id, ro.region)})
		}
	}
	var gone []*pairPath
	for nodeID, m := range h.paths {
		for _, p := range m {
			if p.a == nodeID && w.Relays.ByID(p.relayID) == nil {
				gone = append(gone, p)
			}
		}
	}
	for _, p := range gone {
		h.dropPath(p)
		if t := w.Tenant(p.tenantID); t != nil {
			h.repeer(t, p) // back to direct; the agents report again if it fails
		}
	}
	return touched
}

// relayInfos is the relay map every agent gets.
func relayInfos(w *state.World) []*controlpb.RelayInfo {
	out := make([]*controlpb.RelayInfo, 0, w.Relays.Len())
	for _, r := range w.Relays.All() {
		ri := &controlpb.RelayInfo{
			Id: r.ID, Name: r.Name, Region: r.Region, StunPort: uint32(r.STUNPort),
			TlsUrl: r.TLSURL, WsUrl: r.WSURL,
		}
		if r.PublicAddr.IsValid() {
			ri.Address = r.PublicAddr.String()
		}
		if !r.RelayKey.IsZero() {
			raw := r.RelayKey.Raw()
			ri.RelayKey = raw[:]
		}
		out = append(out, ri)
	}
	return out
}
