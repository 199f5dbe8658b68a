package control

import (
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

// outbox is one connected agent's pending changes, merged by peer so that a slow
// agent receives the latest state of each peer, never an unbounded backlog.
type outbox struct {
	nodeID, tenantID, networkID string

	mu     sync.Mutex
	self   *controlpb.Self
	upsert map[string]*controlpb.Peer
	remove map[string]struct{}
	bye    *controlpb.Goodbye

	wake chan struct{} // one pending signal at most
	done chan struct{} // closed when the session ends
	once sync.Once
}

func newOutbox(n *model.Node) *outbox {
	return &outbox{
		nodeID: n.ID, tenantID: n.TenantID, networkID: n.NetworkID,
		upsert: map[string]*controlpb.Peer{}, remove: map[string]struct{}{},
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) putPeer(p *controlpb.Peer) {
	o.mu.Lock()
	delete(o.remove, p.NodeId)
	o.upsert[p.NodeId] = p
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) dropPeer(id string) {
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

func (o *outbox) goodbye(code, reason string) {
	o.mu.Lock()
	if o.bye == nil {
		o.bye = &controlpb.Goodbye{Code: code, Reason: reason}
	}
	o.mu.Unlock()
	o.signal()
}

// end marks the session over; it is safe to call more than once.
func (o *outbox) end() { o.once.Do(func() { close(o.done) }) }

// take empties the outbox into one delta (nil when nothing is pending) and the
// goodbye, if one is pending. Peers come out sorted, so deltas are deterministic.
func (o *outbox) take() (*controlpb.MapDelta, *controlpb.Goodbye) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bye != nil {
		return nil, o.bye
	}
	if o.self == nil && len(o.upsert) == 0 && len(o.remove) == 0 {
		return nil, nil
	}
	d := &controlpb.MapDelta{Self: o.self}
	for _, p := range o.upsert {
		d.Upsert = append(d.Upsert, p)
	}
	slices.SortFunc(d.Upsert, func(a, b *controlpb.Peer) int { return strings.Compare(a.NodeId, b.NodeId) })
	for id := range o.remove {
		d.Remove = append(d.Remove, id)
	}
	slices.Sort(d.Remove)
	o.self = nil
	clear(o.upsert)
	clear(o.remove)
	return d, nil
}

// hub routes node changes to the outboxes of the connected agents that see them.
// Its cost per change is proportional to the connected nodes of the changed node's
// network, never to all nodes squared.
type hub struct {
	mu        sync.Mutex
	byNode    map[string]*outbox
	byNetwork map[string]map[string]*outbox
}

func newHub() *hub {
	return &hub{byNode: map[string]*outbox{}, byNetwork: map[string]map[string]*outbox{}}
}

// add registers o and returns the outbox it replaces (an older connection of the
// same node), or nil.
func (h *hub) add(o *outbox) *outbox {
	h.mu.Lock()
	defer h.mu.Unlock()
	old := h.byNode[o.nodeID]
	h.byNode[o.nodeID] = o
	nw := h.byNetwork[o.networkID]
	if nw == nil {
		nw = map[string]*outbox{}
		h.byNetwork[o.networkID] = nw
	}
	nw[o.nodeID] = o
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
	nw := h.byNetwork[o.networkID]
	delete(nw, o.nodeID)
	if len(nw) == 0 {
		delete(h.byNetwork, o.networkID)
	}
}

// connected is the number of registered outboxes.
func (h *hub) connected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byNode)
}

// apply queues what changes means for every connected agent and returns how many
// outboxes it touched. The views of a changed node are computed once per change;
// each affected agent then costs one visibility check and one map insert.
func (h *hub) apply(w *state.World, changes []state.NodeChange) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	touched := 0
	for _, c := range changes {
		n := c.Node()
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
				case viewer != nil && c.New != nil && newV != nil && visible(viewer, c.New):
					o.putPeer(newV)
				default:
					o.dropPeer(n.ID)
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
			own.goodbye("node_deleted", "node "+n.Name+" was deleted")
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
	return touched
}
