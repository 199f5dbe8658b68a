package control

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

// mailbox is what the outbox of every session (agent or relay) has: a lock for
// the pending changes, a pending goodbye, and the signals of its session loop.
type mailbox struct {
	mu   sync.Mutex
	bye  *controlpb.Goodbye
	wake chan struct{} // one pending signal at most
	done chan struct{} // closed when the session ends
	once sync.Once
}

func newMailbox() mailbox {
	return mailbox{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (m *mailbox) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// goodbye queues the end of the session; the first reason wins.
func (m *mailbox) goodbye(code, reason string) {
	m.mu.Lock()
	if m.bye == nil {
		m.bye = &controlpb.Goodbye{Code: code, Reason: reason}
	}
	m.mu.Unlock()
	m.signal()
}

// end marks the session over; it is safe to call more than once.
func (m *mailbox) end() { m.once.Do(func() { close(m.done) }) }

// outbox is one connected agent's pending changes, merged by peer so that a slow
// agent receives the latest state of each peer, never an unbounded backlog.
type outbox struct {
	nodeID, tenantID, networkID string

	mailbox
	self   *controlpb.Self
	upsert map[string]*controlpb.Peer
	remove map[string]struct{}
	policy *controlpb.Policy   // pending replacement
	relays *controlpb.RelayMap // pending replacement
	// known are the peers the agent has once the queued changes are sent, and
	// sentPolicy the policy it has then; only the hub touches them, under its lock.
	known      map[string]struct{}
	sentPolicy *controlpb.Policy
}

func newOutbox(n *model.Node) *outbox {
	return &outbox{
		nodeID: n.ID, tenantID: n.TenantID, networkID: n.NetworkID,
		upsert: map[string]*controlpb.Peer{}, remove: map[string]struct{}{}, known: map[string]struct{}{},
		mailbox: newMailbox(),
	}
}

func (o *outbox) putPeer(p *controlpb.Peer) {
	o.known[p.NodeId] = struct{}{}
	o.mu.Lock()
	delete(o.remove, p.NodeId)
	o.upsert[p.NodeId] = p
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) dropPeer(id string) {
	delete(o.known, id)
	o.mu.Lock()
	delete(o.upsert, id)
	o.remove[id] = struct{}{}
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) setSelf(s *controlpb.Self) {
	o.mu.Lock()
	o.self = s
	o.mu.Unlock()
	o.signal()
}

// setPolicy queues p unless the agent has (or will have) it already.
func (o *outbox) setPolicy(p *controlpb.Policy) {
	if proto.Equal(p, o.sentPolicy) {
		return
	}
	o.sentPolicy = p
	o.mu.Lock()
	o.policy = p
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) setRelayMap(m *controlpb.RelayMap) {
	o.mu.Lock()
	o.relays = m
	o.mu.Unlock()
	o.signal()
}

// take empties the outbox into one delta (nil when nothing is pending) and the
// goodbye, if one is pending. Peers come out sorted, so deltas are deterministic.
func (o *outbox) take() (*controlpb.MapDelta, *controlpb.Goodbye) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bye != nil {
		return nil, o.bye
	}
	if o.self == nil && o.policy == nil && o.relays == nil && len(o.upsert) == 0 && len(o.remove) == 0 {
		return nil, nil
	}
	d := &controlpb.MapDelta{Self: o.self, Policy: o.policy, RelayMap: o.relays}
	for _, p := range o.upsert {
		d.Upsert = append(d.Upsert, p)
	}
	slices.SortFunc(d.Upsert, func(a, b *controlpb.Peer) int { return strings.Compare(a.NodeId, b.NodeId) })
	for id := range o.remove {
		d.Remove = append(d.Remove, id)
	}
	slices.Sort(d.Remove)
	o.self, o.policy, o.relays = nil, nil, nil
	clear(o.upsert)
	clear(o.remove)
	return d, nil
}

// hub routes changes to the outboxes of the connected agents that see them. A node
// change costs work proportional to the connected nodes of its network, never to
// all nodes squared. Each tenant's policy is compiled off the writer's path by the
// hub's worker; until a recompile lands, the last compiled policy decides.
type hub struct {
	st  *state.State
	log *slog.Logger

	closing bool // set by Server.Close, under mu: no new sessions

	mu        sync.Mutex
	byNode    map[string]*outbox
	byNetwork map[string]map[string]*outbox
	byTenant  map[string]map[string]*outbox
	pol       map[string]*tenantPolicy
	dirty     map[string]*dirtyTenant // waiting for the worker
	kick      chan struct{}

	compiling map[string]chan struct{} // tenants being compiled by policy; closed when done

	relays map[string]*relayOutbox         // connected relays by relay ID
	paths  map[string]map[string]*pairPath // node ID → peer ID → relayed path
	ports  map[string]map[uint16]struct{}  // relay ID → UDP ports its sessions use
}

// Errors of start: the session must end with a goodbye.
var (
	errShutdown = errors.New("controller is shutting down")
	errNodeGone = errors.New("node was deleted")
)

// dirtyTenant is what changed in a tenant since its last compile.
type dirtyTenant struct {
	document bool            // the policy document changed: every relation may have
	nodes    map[string]bool // these nodes changed in a way policy can see
}

func newHub(st *state.State, log *slog.Logger) *hub {
	return &hub{
		st: st, log: log,
		byNode: map[string]*outbox{}, byNetwork: map[string]map[string]*outbox{}, byTenant: map[string]map[string]*outbox{},
		pol: map[string]*tenantPolicy{}, dirty: map[string]*dirtyTenant{}, kick: make(chan struct{}, 1),
		compiling: map[string]chan struct{}{},
		relays:    map[string]*relayOutbox{}, paths: map[string]map[string]*pairPath{}, ports: map[string]map[uint16]struct{}{},
	}
}

func addTo(m map[string]map[string]*outbox, k string, o *outbox) {
	set := m[k]
	if set == nil {
		set = map[string]*outbox{}
		m[k] = set
	}
	set[o.nodeID] = o
}

func removeFrom(m map[string]map[string]*outbox, k string, o *outbox) {
	delete(m[k], o.nodeID)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// add registers o and returns the outbox it replaces (an older connection of the
// same node), or nil.
func (h *hub) add(o *outbox) *outbox {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.byNode[o.nodeID]
	h.byNode[o.nodeID] = o
	addTo(h.byNetwork, o.networkID, o)
	addTo(h.byTenant, o.tenantID, o)
	return old
}

// remove unregisters o if it is still the node's current outbox.
func (h *hub) remove(o *outbox) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byNode[o.nodeID] != o {
		return
	}
	delete(h.byNode, o.nodeID)
	removeFrom(h.byNetwork, o.networkID, o)
	removeFrom(h.byTenant, o.tenantID, o)
	if len(h.byTenant[o.tenantID]) == 0 {
		// Nobody of the tenant is connected: its compiled policy is only memory
		// now; the next session compiles afresh.
		delete(h.pol, o.tenantID)
	}
}

// connected is the number of registered outboxes.
func (h *hub) connected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byNode)
}

// sees says whether viewer gets other as a peer: same network, a node key, and
// the tenant's compiled policy lets them talk (in either direction).
func (h *hub) sees(viewer, other *model.Node) bool {
	if !visible(viewer, other) {
		return false
	}
	tp := h.pol[viewer.TenantID]
	return tp == nil || tp.allows(viewer.ID, other.ID)
}

// policy returns tenant t's compiled policy, compiling it now if the hub has none
// or has one from before node nodeID existed ("" skips that check).
func (h *hub) policy(t *state.Tenant, nodeID string) (*tenantPolicy, error) {
	fits := func(tp *tenantPolicy) bool { return tp != nil && (nodeID == "" || tp.compiled.Has(nodeID)) }
	h.mu.Lock()
	tp, busy := h.pol[t.ID], h.compiling[t.ID]
	if !fits(tp) && busy == nil {
		// Ours to compile; sessions arriving meanwhile (all agents reconnecting
		// after a controller restart) wait for it rather than compile again.
		done := make(chan struct{})
		h.compiling[t.ID] = done
		defer func() {
			h.mu.Lock()
			delete(h.compiling, t.ID)
			h.mu.Unlock()
			close(done)
		}()
	}
	h.mu.Unlock()
	if fits(tp) {
		return tp, nil
	}
	if busy != nil {
		<-busy
		h.mu.Lock()
		tp = h.pol[t.ID]
		h.mu.Unlock()
		if fits(tp) {
			return tp, nil
		}
	}
	doc, ver := documentOf(t)
	c, err := compileForEnforcement(t, doc)
	if err != nil {
		return nil, err
	}
	tp = newTenantPolicy(ver, c)
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur := h.pol[t.ID]; cur != nil && (nodeID == "" || cur.compiled.Has(nodeID)) {
		return cur, nil
	}
	h.pol[t.ID] = tp
	if nodeID != "" {
		// Connected agents' policies predate this node: let the worker catch up.
		h.markDirty(t.ID, nodeID, false)
	}
	return tp, nil
}

func documentOf(t *state.Tenant) (string, int64) {
	if t.Policy == nil {
		return "", 0
	}
	return t.Policy.Document, t.Policy.Version
}

// start opens a session: it registers o and returns the node's full map, built
// after registration so that every later change reaches o as a delta.
func (h *hub) start(w *state.World, t *state.Tenant, n *model.Node, o *outbox) (*controlpb.NetworkMap, *outbox, error) {
	if _, err := h.policy(t, n.ID); err != nil {
		return nil, nil, err
	}
	old := h.add(o)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return nil, old, errShutdown
	}
	// The snapshot is taken now, registered and under the lock: a write published
	// before it is in it, and one published after reaches o through apply.
	if h.st != nil {
		w = h.st.World()
	}
	if t = w.Tenant(n.TenantID); t != nil {
		n = t.Nodes.ByID(n.ID)
	}
	if t == nil || n == nil {
		return nil, old, errNodeGone
	}
	tp := h.pol[t.ID] // the newest, which may have replaced the one compiled above
	m := &controlpb.NetworkMap{Seq: 1, Self: selfView(n, t.Networks.ByID(n.NetworkID)), Relays: relayInfos(w)}
	for _, p := range t.Nodes.All() {
		if h.sees(n, p) {
			m.Peers = append(m.Peers, h.withRelay(n.ID, peerView(p)))
			o.known[p.ID] = struct{}{}
		}
	}
	m.Policy = policyView(tp.compiled.Node(n.ID), tp.version)
	o.sentPolicy = m.Policy
	return m, old, nil
}

// apply queues what changes means for every connected agent and returns how many
// outboxes it touched. The views of a changed node are computed once per change;
// each affected agent then costs one visibility check and one map insert. Changes
// that policy can see are also handed to the worker.
func (h *hub) apply(w *state.World, changes state.Changes) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	touched := 0
	for _, c := range changes.Nodes {
		n := c.Node()
		if policyRelevant(c) {
			h.markDirty(n.TenantID, n.ID, false)
		}
		h.relayNodeChange(c)
		if c.New == nil {
			h.dropNodePaths(n.ID)
		}
		t := w.Tenant(n.TenantID)
		var oldV, newV *controlpb.Peer
		if c.Old != nil && !c.Old.NodeKey.IsZero() {
			oldV = peerView(c.Old)
		}
		if c.New != nil && !c.New.NodeKey.IsZero() {
			newV = peerView(c.New)
		}
		if !proto.Equal(oldV, newV) {
			for id, o := range h.byNetwork[n.NetworkID] {
				if id == n.ID {
					continue
				}
				var viewer *model.Node
				if t != nil {
					viewer = t.Nodes.ByID(id)
				}
				switch {
				case viewer != nil && c.New != nil && newV != nil && h.sees(viewer, c.New):
					o.putPeer(h.withRelay(id, newV))
				case hasKnown(o, n.ID):
					o.dropPeer(n.ID)
					h.unpair(id, n.ID)
				default:
					continue
				}
				touched++
			}
		}
		own := h.byNode[n.ID]
		if own == nil {
			continue
		}
		touched++
		if c.New == nil {
			own.goodbye(CodeNodeDeleted, "node "+n.Name+" was deleted")
			continue
		}
		var nw *model.Network
		if t != nil {
			nw = t.Networks.ByID(n.NetworkID)
		}
		sv := selfView(c.New, nw)
		if c.Old == nil || !proto.Equal(selfView(c.Old, nw), sv) {
			own.setSelf(sv)
		}
	}
	for _, tid := range changes.Policies {
		h.markDirty(tid, "", true)
	}
	if changes.Relays {
		touched += h.relaysChanged(w)
	}
	// A network's MTU or name is part of each member's Self.
	for _, nw := range changes.Networks {
		t := w.Tenant(nw.TenantID)
		for id, o := range h.byNetwork[nw.ID] {
			if n := t.Nodes.ByID(id); n != nil {
				o.setSelf(selfView(n, nw))
				touched++
			}
		}
	}
	return touched
}

func hasKnown(o *outbox, id string) bool {
	_, ok := o.known[id]
	return ok
}

// markDirty records a change for the worker; the caller holds h.mu.
func (h *hub) markDirty(tenantID, nodeID string, document bool) {
	d := h.dirty[tenantID]
	if d == nil {
		d = &dirtyTenant{nodes: map[string]bool{}}
		h.dirty[tenantID] = d
	}
	d.document = d.document || document
	if nodeID != "" {
		d.nodes[nodeID] = true
	}
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// run recompiles dirty tenants and reconciles their connected agents until stop
// is closed.
func (h *hub) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-h.kick:
		}
		h.mu.Lock()
		dirty := h.dirty
		h.dirty = map[string]*dirtyTenant{}
		h.mu.Unlock()
		w := h.st.World()
		for tid, d := range dirty {
			h.recompile(w, tid, d)
		}
	}
}

// recompile compiles one tenant's policy from w and brings its connected agents'
// peers and policies in line. A document that no longer compiles (say, a test that
// names a node just deleted) leaves the last compiled policy in force.
func (h *hub) recompile(w *state.World, tid string, d *dirtyTenant) {
	t := w.Tenant(tid)
	h.mu.Lock()
	idle := len(h.byTenant[tid]) == 0
	if t == nil || idle {
		delete(h.pol, tid) // nobody to send it to; a session compiles afresh
	}
	h.mu.Unlock()
	if t == nil || idle {
		return
	}
	doc, ver := documentOf(t)
	c, err := compileForEnforcement(t, doc)
	if err != nil {
		h.log.Warn("tenant policy no longer compiles; keeping the last compiled one", "tenant", t.Name, "version", ver, "err", err)
		return
	}
	tp := newTenantPolicy(ver, c)
	// Each connected node's policy and peer set, computed before taking the lock
	// that the state writer's fan-out needs (Node costs tens of milliseconds per
	// node in a large, dense tenant). tp is not shared yet, so its cache is ours.
	h.mu.Lock()
	ids := make([]string, 0, len(h.byTenant[tid]))
	for id := range h.byTenant[tid] {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	views := make(map[string]*controlpb.Policy, len(ids))
	for _, id := range ids {
		views[id] = policyView(tp.compiled.Node(id), tp.version)
		tp.allows(id, "")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pol[tid] = tp
	// Reconcile against the World as it is now, not as it was when the compile
	// started: apply has handled every write since, against the old policy.
	if h.st != nil {
		if t = h.st.World().Tenant(tid); t == nil {
			return
		}
	}
	for id, o := range h.byTenant[tid] {
		viewer := t.Nodes.ByID(id)
		if viewer == nil {
			continue
		}
		reconcilePeer := func(other *model.Node) {
			want := h.sees(viewer, other)
			switch have := hasKnown(o, other.ID); {
			case want && !have:
				o.putPeer(h.withRelay(id, peerView(other)))
			case !want && have:
				o.dropPeer(other.ID)
				h.unpair(id, other.ID)
			}
		}
		// A new policy, or a viewer that itself changed (say, it just joined and its
		// session began under a policy compiled before it existed): every relation
		// of the viewer, which costs its peers under the new policy and the old.
		if d.document || d.nodes[id] {
			want := map[string]bool{}
			for _, pid := range tp.compiled.Peers(id) {
				if other := t.Nodes.ByID(pid); other != nil && other.ID != id && visible(viewer, other) {
					want[pid] = true
					if !hasKnown(o, pid) {
						o.putPeer(h.withRelay(id, peerView(other)))
					}
				}
			}
			for kid := range o.known {
				if !want[kid] {
					o.dropPeer(kid)
					h.unpair(id, kid)
				}
			}
		} else {
			for nid := range d.nodes {
				switch other := t.Nodes.ByID(nid); {
				case other != nil && other.ID != id:
					reconcilePeer(other)
				case other == nil && hasKnown(o, nid):
					o.dropPeer(nid)
				}
			}
		}
		pv := views[id]
		if pv == nil { // connected while the views were made
			pv = policyView(tp.compiled.Node(id), tp.version)
		}
		o.setPolicy(pv)
	}
}
