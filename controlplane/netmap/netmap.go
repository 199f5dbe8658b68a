// Package netmap is a node's network map as the agent holds it: typed, validated,
// and changed only by applying the controller's deltas to a copy. It converts the
// wire form (controlpb) into typed values once, at the edge, and refuses anything
// malformed with an error naming the field; it never touches the kernel. The
// controller builds the wire form; see controlplane/control.
package netmap

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/policy"
)

// Map is a node's whole network map. Peers are sorted by NodeID. A Map is never
// modified after it is made; Apply returns a new one.
type Map struct {
	Seq   uint64 `json:"seq"`
	Self  Self   `json:"self"`
	Peers []Peer `json:"peers"`
	// Policy is the node's compiled policy; nil when the controller sent none.
	Policy *policy.NodePolicy `json:"policy,omitempty"`
	// Relays is the relay map: the relay servers the node may use.
	Relays []Relay `json:"relays,omitempty"`
}

// Self is the node's own part.
type Self struct {
	NodeID        string         `json:"node_id"`
	Name          string         `json:"name"`
	TenantID      string         `json:"tenant_id"`
	NetworkID     string         `json:"network_id"`
	NetworkName   string         `json:"network_name"`
	Addresses     []netip.Prefix `json:"addresses"`
	Routes        []netip.Prefix `json:"routes"`
	MTU           int            `json:"mtu"`
	NodeKey       key.NodePublic `json:"node_key"`
	RotateNodeKey bool           `json:"rotate_node_key,omitempty"`
}

// Peer is one WireGuard peer.
type Peer struct {
	NodeID     string           `json:"node_id"`
	Name       string           `json:"name"`
	NodeKey    key.NodePublic   `json:"node_key"`
	Endpoints  []netip.AddrPort `json:"endpoints"`
	AllowedIPs []netip.Prefix   `json:"allowed_ips"`
	// Relay, when set, says to reach the peer through a relay, not its endpoints.
	Relay *RelayPath `json:"relay,omitempty"`
}

// Peer returns the peer with the node ID, or nil.
func (m *Map) Peer(nodeID string) *Peer {
	i, ok := slices.BinarySearchFunc(m.Peers, nodeID, func(p Peer, id string) int { return strings.Compare(p.NodeID, id) })
	if !ok {
		return nil
	}
	return &m.Peers[i]
}

// Limits on what a map may hold, so a broken or hostile message cannot make the
// agent allocate without bound. The message size limit of the channel comes first.
const (
	maxPrefixes  = 1024
	maxEndpoints = 64
	minMTU       = 1280
	maxMTU       = 9000
)

// FromProto checks and converts a full map.
func FromProto(pm *controlpb.NetworkMap) (*Map, error) {
	if pm == nil {
		return nil, fmt.Errorf("network map: missing")
	}
	self, err := selfFromProto(pm.GetSelf())
	if err != nil {
		return nil, err
	}
	m := &Map{Seq: pm.GetSeq(), Self: self, Peers: make([]Peer, 0, len(pm.GetPeers()))}
	if m.Policy, err = policyFromProto(pm.GetPolicy()); err != nil {
		return nil, err
	}
	if m.Relays, err = RelaysFromProto("relays", pm.GetRelays()); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, pp := range pm.GetPeers() {
		p, err := peerFromProto(pp)
		if err != nil {
			return nil, fmt.Errorf("peers[%d]: %w", i, err)
		}
		if seen[p.NodeID] {
			return nil, fmt.Errorf("peers[%d].node_id: %q appears twice", i, p.NodeID)
		}
		seen[p.NodeID] = true
		m.Peers = append(m.Peers, p)
	}
	sortPeers(m.Peers)
	return m, nil
}

// Apply returns m changed by delta d; m itself is not modified. A delta whose
// sequence number is not after m's is refused.
func (m *Map) Apply(d *controlpb.MapDelta) (*Map, error) {
	if d == nil {
		return nil, fmt.Errorf("map delta: missing")
	}
	if d.GetSeq() <= m.Seq {
		return nil, fmt.Errorf("map delta: seq %d is not after the map's %d", d.GetSeq(), m.Seq)
	}
	out := &Map{Seq: d.GetSeq(), Self: m.Self, Policy: m.Policy, Relays: m.Relays}
	if rm := d.GetRelayMap(); rm != nil {
		rs, err := RelaysFromProto("relay_map.relays", rm.GetRelays())
		if err != nil {
			return nil, err
		}
		out.Relays = rs
	}
	if d.GetPolicy() != nil {
		np, err := policyFromProto(d.GetPolicy())
		if err != nil {
			return nil, err
		}
		out.Policy = np
	}
	if d.GetSelf() != nil {
		self, err := selfFromProto(d.GetSelf())
		if err != nil {
			return nil, err
		}
		if self.NodeID != m.Self.NodeID {
			return nil, fmt.Errorf("self.node_id: %q is not this node (%q)", self.NodeID, m.Self.NodeID)
		}
		out.Self = self
	}
	byID := make(map[string]Peer, len(m.Peers)+len(d.GetUpsert()))
	for _, p := range m.Peers {
		byID[p.NodeID] = p
	}
	for i, id := range d.GetRemove() {
		if id == "" {
			return nil, fmt.Errorf("remove[%d]: empty node id", i)
		}
		delete(byID, id)
	}
	for i, pp := range d.GetUpsert() {
		p, err := peerFromProto(pp)
		if err != nil {
			return nil, fmt.Errorf("upsert[%d]: %w", i, err)
		}
		byID[p.NodeID] = p
	}
	if _, ok := byID[out.Self.NodeID]; ok {
		return nil, fmt.Errorf("upsert: the node itself (%q) cannot be its own peer", out.Self.NodeID)
	}
	out.Peers = make([]Peer, 0, len(byID))
	for _, p := range byID {
		out.Peers = append(out.Peers, p)
	}
	sortPeers(out.Peers)
	return out, nil
}

func sortPeers(ps []Peer) {
	slices.SortFunc(ps, func(a, b Peer) int { return cmp.Compare(a.NodeID, b.NodeID) })
}

func selfFromProto(ps *controlpb.Self) (Self, error) {
	if ps == nil {
		return Self{}, fmt.Errorf("self: missing")
	}
	s := Self{
		NodeID: ps.GetNodeId(), Name: ps.GetName(), TenantID: ps.GetTenantId(),
		NetworkID: ps.GetNetworkId(), NetworkName: ps.GetNetworkName(),
		MTU: int(ps.GetMtu()), RotateNodeKey: ps.GetRotateNodeKey(),
	}
	if s.NodeID == "" {
		return Self{}, fmt.Errorf("self.node_id: empty")
	}
	if s.MTU < minMTU || s.MTU > maxMTU {
		return Self{}, fmt.Errorf("self.mtu: %d is outside %d..%d", ps.GetMtu(), minMTU, maxMTU)
	}
	var err error
	if s.NodeKey, err = nodeKey("self.node_key", ps.GetNodeKey()); err != nil {
		return Self{}, err
	}
	if s.Addresses, err = prefixes("self.addresses", ps.GetAddresses()); err != nil {
		return Self{}, err
	}
	if len(s.Addresses) == 0 {
		return Self{}, fmt.Errorf("self.addresses: empty")
	}
	if s.Routes, err = prefixes("self.routes", ps.GetRoutes()); err != nil {
		return Self{}, err
	}
	return s, nil
}

func peerFromProto(pp *controlpb.Peer) (Peer, error) {
	if pp == nil {
		return Peer{}, fmt.Errorf("missing")
	}
	p := Peer{NodeID: pp.GetNodeId(), Name: pp.GetName()}
	if p.NodeID == "" {
		return Peer{}, fmt.Errorf("node_id: empty")
	}
	var err error
	if p.NodeKey, err = nodeKey("node_key", pp.GetNodeKey()); err != nil {
		return Peer{}, err
	}
	if p.AllowedIPs, err = prefixes("allowed_ips", pp.GetAllowedIps()); err != nil {
		return Peer{}, err
	}
	if len(pp.GetEndpoints()) > maxEndpoints {
		return Peer{}, fmt.Errorf("endpoints: %d is more than %d", len(pp.GetEndpoints()), maxEndpoints)
	}
	p.Endpoints = make([]netip.AddrPort, 0, len(pp.GetEndpoints()))
	for i, s := range pp.GetEndpoints() {
		ap, err := netip.ParseAddrPort(s)
		if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() {
			return Peer{}, fmt.Errorf("endpoints[%d]: %q is not an address:port", i, s)
		}
		p.Endpoints = append(p.Endpoints, ap)
	}
	if p.Relay, err = relayPathFromProto(pp.GetRelay()); err != nil {
		return Peer{}, err
	}
	return p, nil
}

func nodeKey(field string, b []byte) (key.NodePublic, error) {
	if len(b) != key.Len {
		return key.NodePublic{}, fmt.Errorf("%s: %d bytes, want %d", field, len(b), key.Len)
	}
	k := key.NodePublicFromRaw([key.Len]byte(b))
	if k.IsZero() {
		return key.NodePublic{}, fmt.Errorf("%s: all zero", field)
	}
	return k, nil
}

func prefixes(field string, ss []string) ([]netip.Prefix, error) {
	if len(ss) > maxPrefixes {
		return nil, fmt.Errorf("%s: %d prefixes is more than %d", field, len(ss), maxPrefixes)
	}
	out := make([]netip.Prefix, 0, len(ss))
	for i, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q is not a prefix", field, i, s)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%s[%d]: %q has host bits set", field, i, s)
		}
		out = append(out, p)
	}
	return out, nil
}

// Marshal is the map's saved form (JSON), for the agent's state directory.
func (m *Map) Marshal() ([]byte, error) { return json.MarshalIndent(m, "", "  ") }

// Unmarshal reads a saved map.
func Unmarshal(b []byte) (*Map, error) {
	var m Map
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("saved network map: %w", err)
	}
	if m.Self.NodeID == "" || m.Self.NodeKey.IsZero() {
		return nil, fmt.Errorf("saved network map: no self node")
	}
	sortPeers(m.Peers)
	return &m, nil
}
