package control

import (
	"slices"
	"strings"
	"time"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/state"
)

// CodeRelayUnknown refuses (or ends) a relay whose key is not a registered relay's.
const CodeRelayUnknown = "relay_unknown"

// relayOutbox is one connected relay's pending changes, merged by key like an
// agent's outbox.
type relayOutbox struct {
	relayID string
	region  string
	key     key.RelayPublic

	mailbox
	clients        map[string]*controlpb.RelayClient
	removeClients  map[string]struct{}
	sessions       map[uint64]*controlpb.RelaySession
	removeSessions map[uint64]struct{}
	addPairs       map[[2]string]*controlpb.RelayPair
	removePairs    map[[2]string]*controlpb.RelayPair
	mesh           *controlpb.RelayMap // pending replacement
}

func newRelayOutbox(r *model.Relay) *relayOutbox {
	return &relayOutbox{
		relayID: r.ID, region: r.Region, key: r.RelayKey,
		clients: map[string]*controlpb.RelayClient{}, removeClients: map[string]struct{}{},
		sessions: map[uint64]*controlpb.RelaySession{}, removeSessions: map[uint64]struct{}{},
		addPairs: map[[2]string]*controlpb.RelayPair{}, removePairs: map[[2]string]*controlpb.RelayPair{},
		mailbox: newMailbox(),
	}
}

func (o *relayOutbox) setMesh(m *controlpb.RelayMap) {
	o.mu.Lock()
	o.mesh = m
	o.mu.Unlock()
	o.signal()
}

func (o *relayOutbox) putClient(c *controlpb.RelayClient) {
	o.mu.Lock()
	delete(o.removeClients, c.NodeId)
	o.clients[c.NodeId] = c
	o.mu.Unlock()
	o.signal()
}

func (o *relayOutbox) dropClient(nodeID string) {
	o.mu.Lock()
	delete(o.clients, nodeID)
	o.removeClients[nodeID] = struct{}{}
	o.mu.Unlock()
	o.signal()
}

func (o *relayOutbox) addPath(p *pairPath) {
	o.mu.Lock()
	if p.level == pathUDP {
		delete(o.removeSessions, p.session)
		o.sessions[p.session] = p.sessionView()
	} else {
		k := [2]string{p.a, p.b}
		delete(o.removePairs, k)
		o.addPairs[k] = p.pairView()
	}
	o.mu.Unlock()
	o.signal()
}

func (o *relayOutbox) dropPath(p *pairPath) {
	o.mu.Lock()
	if p.level == pathUDP {
		delete(o.sessions, p.session)
		o.removeSessions[p.session] = struct{}{}
	} else {
		k := [2]string{p.a, p.b}
		delete(o.addPairs, k)
		o.removePairs[k] = p.pairView()
	}
	o.mu.Unlock()
	o.signal()
}

// take empties the outbox into one delta (nil when nothing is pending), sorted so
// that deltas are deterministic, and the goodbye, if one is pending.
func (o *relayOutbox) take() (*controlpb.RelayDelta, *controlpb.Goodbye) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bye != nil {
		return nil, o.bye
	}
	if o.mesh == nil && len(o.clients)+len(o.removeClients)+len(o.sessions)+len(o.removeSessions)+len(o.addPairs)+len(o.removePairs) == 0 {
		return nil, nil
	}
	d := &controlpb.RelayDelta{Mesh: o.mesh}
	o.mesh = nil
	for _, c := range o.clients {
		d.UpsertClients = append(d.UpsertClients, c)
	}
	slices.SortFunc(d.UpsertClients, func(a, b *controlpb.RelayClient) int { return strings.Compare(a.NodeId, b.NodeId) })
	for id := range o.removeClients {
		d.RemoveClients = append(d.RemoveClients, id)
	}
	slices.Sort(d.RemoveClients)
	for _, s := range o.sessions {
		d.UpsertSessions = append(d.UpsertSessions, s)
	}
	slices.SortFunc(d.UpsertSessions, func(a, b *controlpb.RelaySession) int { return compareU64(a.Id, b.Id) })
	for id := range o.removeSessions {
		d.RemoveSessions = append(d.RemoveSessions, id)
	}
	slices.Sort(d.RemoveSessions)
	d.AddPairs = sortedPairs(o.addPairs)
	d.RemovePairs = sortedPairs(o.removePairs)
	clear(o.clients)
	clear(o.removeClients)
	clear(o.sessions)
	clear(o.removeSessions)
	clear(o.addPairs)
	clear(o.removePairs)
	return d, nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedPairs(m map[[2]string]*controlpb.RelayPair) []*controlpb.RelayPair {
	out := make([]*controlpb.RelayPair, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *controlpb.RelayPair) int {
		if c := strings.Compare(a.NodeA, b.NodeA); c != 0 {
			return c
		}
		return strings.Compare(a.NodeB, b.NodeB)
	})
	return out
}

// clientView is what relays know of node n: nil for a node that cannot connect
// to a relay yet (no machine key or no node key).
func clientView(n *model.Node) *controlpb.RelayClient {
	if n == nil || n.MachineKey.IsZero() || n.NodeKey.IsZero() {
		return nil
	}
	mk, nk := n.MachineKey.Raw(), n.NodeKey.Raw()
	return &controlpb.RelayClient{NodeId: n.ID, TenantId: n.TenantID, MachineKey: mk[:], NodeKey: nk[:]}
}

// startRelay registers o and returns the relay's full configuration: every
// tenant's nodes, and the sessions and pairs the relay carries.
func (h *hub) startRelay(o *relayOutbox) (*controlpb.RelayConfig, *relayOutbox, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return nil, nil, errShutdown
	}
	old := h.relays[o.relayID]
	h.relays[o.relayID] = o
	w := h.st.World()
	cfg := &controlpb.RelayConfig{Seq: 1, Mesh: meshOf(w, o.relayID, o.region)}
	for _, tt := range w.Tenants.All() {
		t := w.Tenant(tt.ID)
		for _, n := range t.Nodes.All() {
			if c := clientView(n); c != nil {
				cfg.Clients = append(cfg.Clients, c)
			}
		}
	}
	for nodeID, m := range h.paths {
		for _, p := range m {
			switch {
			case p.a != nodeID:
			case p.level == pathUDP && p.relayID == o.relayID:
				cfg.Sessions = append(cfg.Sessions, p.sessionView())
			case p.level == pathFramed && p.region == o.region:
				cfg.Pairs = append(cfg.Pairs, p.pairView())
			}
		}
	}
	slices.SortFunc(cfg.Sessions, func(a, b *controlpb.RelaySession) int { return compareU64(a.Id, b.Id) })
	slices.SortFunc(cfg.Pairs, func(a, b *controlpb.RelayPair) int { return strings.Compare(a.NodeA+a.NodeB, b.NodeA+b.NodeB) })
	return cfg, old, nil
}

func (h *hub) removeRelay(o *relayOutbox) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.relays[o.relayID] == o {
		delete(h.relays, o.relayID)
	}
}

// meshOf is the mesh list of relay id in region: the other relays of the region
// that have a key and a framed URL.
func meshOf(w *state.World, id, region string) []*controlpb.RelayInfo {
	var out []*controlpb.RelayInfo
	for _, ri := range relayInfos(w) {
		r := w.Relays.ByID(ri.Id)
		if r.ID != id && r.Region == region && !r.RelayKey.IsZero() && (r.TLSURL != "" || r.WSURL != "") {
			out = append(out, ri)
		}
	}
	return out
}

// regionRelays are the connected relays of region; the caller holds h.mu.
func (h *hub) regionRelays(region string) []*relayOutbox {
	var out []*relayOutbox
	for _, ro := range h.relays {
		if ro.region == region {
			out = append(out, ro)
		}
	}
	return out
}

// relayNodeChange tells the connected relays about one node change; the caller
// holds h.mu.
func (h *hub) relayNodeChange(c state.NodeChange) {
	if len(h.relays) == 0 {
		return
	}
	oldC, newC := clientView(c.Old), clientView(c.New)
	switch {
	case newC != nil && (oldC == nil || !sameClient(oldC, newC)):
		for _, ro := range h.relays {
			ro.putClient(newC)
		}
	case newC == nil && oldC != nil:
		for _, ro := range h.relays {
			ro.dropClient(oldC.NodeId)
		}
	}
}

func sameClient(a, b *controlpb.RelayClient) bool {
	return a.TenantId == b.TenantId && string(a.MachineKey) == string(b.MachineKey) && string(a.NodeKey) == string(b.NodeKey)
}

// admitRelay decides on a relay's hello: its Noise key must be a registered
// relay's key.
func (s *Server) admitRelay(peer key.MachinePublic) (*controlpb.ServerHello, *model.Relay) {
	r := s.st.World().RelayByKey(key.RelayPublicFromRaw(peer.Raw()))
	if r == nil {
		msg := "relay key " + key.RelayPublicFromRaw(peer.Raw()).String() + " is not registered; register it with cvlanctl relay create --relay-key"
		s.log.Info("refusing relay", "key", key.RelayPublicFromRaw(peer.Raw()), "code", CodeRelayUnknown)
		return &controlpb.ServerHello{ProtocolVersion: ProtocolVersion, Code: CodeRelayUnknown, Error: msg}, nil
	}
	return &controlpb.ServerHello{ProtocolVersion: ProtocolVersion, RelayId: r.ID, RelayName: r.Name}, r
}

// serveRelay runs one admitted relay's session until either side ends it.
func (s *Server) serveRelay(conn *noiseconn.Conn, r *model.Relay) {
	defer conn.Close()
	log := s.log.With("relay", r.ID, "name", r.Name)
	ro := newRelayOutbox(r)
	cfg, old, err := s.hub.startRelay(ro)
	if err != nil {
		s.send(conn, goodbyeMsg(CodeShutdown, "controller is shutting down"))
		return
	}
	defer s.hub.removeRelay(ro)
	defer ro.end()
	if old != nil {
		old.goodbye(CodeReplaced, "replaced by a newer connection of the same relay")
	}
	log.Info("relay connected", "remote", conn.RemoteAddr(), "clients", len(cfg.Clients), "sessions", len(cfg.Sessions), "pairs", len(cfg.Pairs))
	if err := s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_RelayConfig{RelayConfig: cfg}}); err != nil {
		log.Info("sending relay config failed", "err", err)
		return
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer ro.end()
		for {
			conn.SetReadDeadline(time.Now().Add(3 * s.opts.KeepAlive))
			if _, err := conn.ReadMsg(); err != nil {
				return // relays send only keep-alives for now
			}
		}
	}()
	defer func() { <-readDone }()
	defer conn.Close()
	tick := time.NewTicker(s.opts.KeepAlive)
	defer tick.Stop()
	seq := uint64(1)
	for {
		select {
		case <-ro.done:
			log.Info("relay disconnected")
			return
		case <-tick.C:
			if err := s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_KeepAlive{KeepAlive: &controlpb.KeepAlive{}}}); err != nil {
				log.Info("relay connection lost", "err", err)
				return
			}
		case <-ro.wake:
			d, bye := ro.take()
			if bye != nil {
				s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_Goodbye{Goodbye: bye}})
				log.Info("relay disconnected", "code", bye.Code, "reason", bye.Reason)
				return
			}
			if d == nil {
				continue
			}
			seq++
			d.Seq = seq
			if err := s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_RelayDelta{RelayDelta: d}}); err != nil {
				log.Info("relay connection lost", "err", err)
				return
			}
		}
	}
}
