// Package relaymap is a relay's configuration as the relay holds it: the nodes it
// may authenticate, the UDP relay sessions it hosts, the node pairs it may carry
// framed packets between and the other relays of its region (its mesh). It converts the controller's RelayConfig and RelayDelta
// messages (controlpb) into typed values once, refuses anything malformed with an
// error naming the field, and changes a Config only by applying a delta to a copy.
// It never touches the kernel or the network.
package relaymap

import (
	"fmt"
	"maps"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
)

// Client is a node the relay may serve.
type Client struct {
	NodeID   string
	TenantID string
	Machine  key.MachinePublic
	Node     key.NodePublic
}

// Session is a UDP relay session: a relay port and a token per side (A, B).
type Session struct {
	ID     uint64
	Ports  [2]uint16
	Tokens [2][32]byte
}

// Pair lets nodes A and B of a tenant reach each other over the framed relay.
type Pair struct {
	TenantID string
	A, B     string // node IDs
}

// Config is a relay's whole configuration. A Config is never modified after it
// is made; Apply returns a new one.
type Config struct {
	Seq      uint64
	Clients  map[string]Client // by node ID
	Sessions map[uint64]Session
	Pairs    map[Pair]struct{}
	// Mesh are the other relays of the region.
	Mesh []netmap.Relay
}

// Limits, so a broken message cannot make the relay allocate without bound (the
// channel's message size limit comes first).
const maxIDLen = 64

// FromProto checks and converts a full configuration.
func FromProto(pc *controlpb.RelayConfig) (*Config, error) {
	if pc == nil {
		return nil, fmt.Errorf("relay config: missing")
	}
	c := &Config{Seq: pc.GetSeq(), Clients: map[string]Client{}, Sessions: map[uint64]Session{}, Pairs: map[Pair]struct{}{}}
	if err := c.add("clients", pc.GetClients(), "sessions", pc.GetSessions(), "pairs", pc.GetPairs()); err != nil {
		return nil, err
	}
	var err error
	if c.Mesh, err = netmap.RelaysFromProto("mesh", pc.GetMesh()); err != nil {
		return nil, err
	}
	return c, nil
}

// Apply returns c changed by delta d (removals first, then additions); c itself
// is not modified. A delta whose sequence number is not after c's is refused.
func (c *Config) Apply(d *controlpb.RelayDelta) (*Config, error) {
	if d == nil {
		return nil, fmt.Errorf("relay delta: missing")
	}
	if d.GetSeq() <= c.Seq {
		return nil, fmt.Errorf("relay delta: seq %d is not after the config's %d", d.GetSeq(), c.Seq)
	}
	out := &Config{Seq: d.GetSeq(), Clients: maps.Clone(c.Clients), Sessions: maps.Clone(c.Sessions), Pairs: maps.Clone(c.Pairs), Mesh: c.Mesh}
	if d.GetMesh() != nil {
		mesh, err := netmap.RelaysFromProto("mesh.relays", d.GetMesh().GetRelays())
		if err != nil {
			return nil, err
		}
		out.Mesh = mesh
	}
	for i, id := range d.GetRemoveClients() {
		if id == "" {
			return nil, fmt.Errorf("remove_clients[%d]: empty node id", i)
		}
		delete(out.Clients, id)
	}
	for _, id := range d.GetRemoveSessions() {
		delete(out.Sessions, id)
	}
	for i, pp := range d.GetRemovePairs() {
		p, err := pairFromProto(pp)
		if err != nil {
			return nil, fmt.Errorf("remove_pairs[%d]: %w", i, err)
		}
		delete(out.Pairs, p)
	}
	if err := out.add("upsert_clients", d.GetUpsertClients(), "upsert_sessions", d.GetUpsertSessions(), "add_pairs", d.GetAddPairs()); err != nil {
		return nil, err
	}
	return out, nil
}

func (c *Config) add(cf string, clients []*controlpb.RelayClient, sf string, sessions []*controlpb.RelaySession, pf string, pairs []*controlpb.RelayPair) error {
	for i, pc := range clients {
		cl, err := clientFromProto(pc)
		if err != nil {
			return fmt.Errorf("%s[%d]: %w", cf, i, err)
		}
		c.Clients[cl.NodeID] = cl
	}
	for i, ps := range sessions {
		s, err := sessionFromProto(ps)
		if err != nil {
			return fmt.Errorf("%s[%d]: %w", sf, i, err)
		}
		c.Sessions[s.ID] = s
	}
	// Two sessions may not share a port: the port says which session a packet is for.
	owner := map[uint16]uint64{}
	for _, s := range c.Sessions {
		for _, p := range s.Ports {
			if o, dup := owner[p]; dup && o != s.ID {
				return fmt.Errorf("%s: port %d belongs to sessions %016x and %016x", sf, p, o, s.ID)
			}
			owner[p] = s.ID
		}
	}
	for i, pp := range pairs {
		p, err := pairFromProto(pp)
		if err != nil {
			return fmt.Errorf("%s[%d]: %w", pf, i, err)
		}
		c.Pairs[p] = struct{}{}
	}
	return nil
}

func checkID(field, id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("%s: %q is empty or longer than %d bytes", field, id, maxIDLen)
	}
	return nil
}

func clientFromProto(pc *controlpb.RelayClient) (Client, error) {
	cl := Client{NodeID: pc.GetNodeId(), TenantID: pc.GetTenantId()}
	if err := checkID("node_id", cl.NodeID); err != nil {
		return Client{}, err
	}
	if err := checkID("tenant_id", cl.TenantID); err != nil {
		return Client{}, err
	}
	for _, k := range []struct {
		field string
		b     []byte
		set   func([key.Len]byte)
	}{
		{"machine_key", pc.GetMachineKey(), func(b [key.Len]byte) { cl.Machine = key.MachinePublicFromRaw(b) }},
		{"node_key", pc.GetNodeKey(), func(b [key.Len]byte) { cl.Node = key.NodePublicFromRaw(b) }},
	} {
		if len(k.b) != key.Len || [key.Len]byte(k.b) == [key.Len]byte{} {
			return Client{}, fmt.Errorf("%s: want %d bytes, not all zero", k.field, key.Len)
		}
		k.set([key.Len]byte(k.b))
	}
	return cl, nil
}

func sessionFromProto(ps *controlpb.RelaySession) (Session, error) {
	s := Session{ID: ps.GetId()}
	for i, p := range []uint32{ps.GetPortA(), ps.GetPortB()} {
		if p == 0 || p > 65535 {
			return Session{}, fmt.Errorf("session %016x: port %d is not a port", s.ID, p)
		}
		s.Ports[i] = uint16(p)
	}
	if s.Ports[0] == s.Ports[1] {
		return Session{}, fmt.Errorf("session %016x: both sides on port %d", s.ID, s.Ports[0])
	}
	for i, t := range [][]byte{ps.GetTokenA(), ps.GetTokenB()} {
		if len(t) != 32 || [32]byte(t) == [32]byte{} {
			return Session{}, fmt.Errorf("session %016x: token of side %c: want 32 bytes, not all zero", s.ID, 'a'+i)
		}
		s.Tokens[i] = [32]byte(t)
	}
	if s.Tokens[0] == s.Tokens[1] {
		return Session{}, fmt.Errorf("session %016x: both sides have the same token", s.ID)
	}
	return s, nil
}

func pairFromProto(pp *controlpb.RelayPair) (Pair, error) {
	p := Pair{TenantID: pp.GetTenantId(), A: pp.GetNodeA(), B: pp.GetNodeB()}
	for _, f := range []struct{ name, v string }{{"tenant_id", p.TenantID}, {"node_a", p.A}, {"node_b", p.B}} {
		if err := checkID(f.name, f.v); err != nil {
			return Pair{}, err
		}
	}
	if p.A == p.B {
		return Pair{}, fmt.Errorf("node_a and node_b are both %q", p.A)
	}
	if p.A > p.B {
		p.A, p.B = p.B, p.A
	}
	return p, nil
}

// Allowed says whether nodes a and b of tenant may reach each other over the
// framed relay.
func (c *Config) Allowed(tenant, a, b string) bool {
	if a > b {
		a, b = b, a
	}
	_, ok := c.Pairs[Pair{TenantID: tenant, A: a, B: b}]
	return ok
}
