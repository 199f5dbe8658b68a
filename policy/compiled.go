package policy

import "net/netip"

// This file is the contract between the compiler (this package) and the eBPF
// enforcement (bpf/policy.c, datapath/bpfpolicy): what one node loads. It is plain
// data, the same on every machine; the loader turns it into map entries.

// Identity is a numeric security identity: one class of remote addresses that every
// rule treats alike (for example: the nodes tagged web and nothing else). Identities
// are dense small numbers within one compiled policy. Within one node's policy,
// classes that the node treats alike share the identity of the lowest of them, so
// a node's map has one identity per distinct treatment (see README.md).
type Identity uint32

const (
	// IdentityWorld is every remote address no prefix names (the LPM default).
	IdentityWorld Identity = 0
	// IdentityAny in a RuleEntry matches every remote identity. The data path looks
	// up the remote's own identity first and falls back to IdentityAny; the
	// compiler has merged the IdentityAny entries into every identity that has
	// entries of its own, so the fallback never changes a verdict.
	IdentityAny Identity = 0xffffffff
)

// Direction is which way a packet crosses the node's overlay interface.
type Direction uint8

const (
	// Ingress packets come from the overlay into the node: the remote is their
	// source, the port is their destination port (a port on this node).
	Ingress Direction = 0
	// Egress packets leave the node into the overlay: the remote is their
	// destination, the port is their destination port (a port on the remote).
	Egress Direction = 1
)

// Verdict is what a rule entry decides.
type Verdict uint8

const (
	Deny   Verdict = 0
	Accept Verdict = 1
)

// Protocol numbers a rule entry may carry. A rule with proto "any" is compiled into
// one entry per protocol below; other IP protocols match no entry and are denied.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// NodePolicy is one node's compiled policy: everything its TC programs need, and
// nothing about other nodes' rules. The zero value denies everything.
type NodePolicy struct {
	// Version is the tenant policy version it was compiled from.
	Version int64
	// Prefixes map remote addresses to identities (longest prefix wins). Host
	// prefixes of peers, named hosts and CIDRs from the policy appear here.
	Prefixes []IdentityPrefix
	// Rules are the (direction, identity, protocol, port range) entries. For one
	// (direction, identity, protocol) the ranges are disjoint and sorted, and each
	// carries its resolved verdict (deny rules override accept rules) and the id of
	// the rule that decided it. Ports not covered are denied by default.
	Rules []RuleEntry
	// RuleNames names each rule id that appears in Rules, for metrics and cvlanctl.
	RuleNames map[uint32]string
}

// IdentityPrefix maps one remote prefix to its identity.
type IdentityPrefix struct {
	Prefix   netip.Prefix
	Identity Identity
}

// RuleEntry is one decided (direction, identity, protocol, port range).
type RuleEntry struct {
	Direction Direction
	Identity  Identity
	Proto     uint8
	// PortLo..PortHi is the destination port range, inclusive. For ICMP it is the
	// whole range 0..65535 (ICMP has no ports; the type is not matched).
	PortLo, PortHi uint16
	Verdict        Verdict
	// RuleID is the deciding rule's stable id: it survives recompiles (it derives
	// from the rule's name), so per-rule counters keep their meaning.
	RuleID uint32
}

// String returns "accept" or "deny".
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case Deny:
		return "deny"
	}
	return "Verdict(" + itoa(int(v)) + ")"
}

// String returns "ingress" or "egress".
func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "Direction(" + itoa(int(d)) + ")"
}

// Lookup is what the data path does for one packet: the identity of the remote
// address (longest prefix, IdentityWorld when none covers it), then the entry for
// (dir, identity, proto, port), falling back to IdentityAny. ok is false when no
// entry matches (default deny). It scans; loaders build real maps instead.
func (np *NodePolicy) Lookup(dir Direction, remote netip.Addr, proto uint8, port uint16) (e RuleEntry, ok bool) {
	id := np.IdentityOf(remote)
	if e, ok := np.entry(dir, id, proto, port); ok {
		return e, true
	}
	return np.entry(dir, IdentityAny, proto, port)
}

// IdentityOf returns the identity of the longest prefix covering addr, or
// IdentityWorld.
func (np *NodePolicy) IdentityOf(addr netip.Addr) Identity {
	best, id := -1, IdentityWorld
	for _, p := range np.Prefixes {
		if p.Prefix.Bits() > best && p.Prefix.Contains(addr) {
			best, id = p.Prefix.Bits(), p.Identity
		}
	}
	return id
}

func (np *NodePolicy) entry(dir Direction, id Identity, proto uint8, port uint16) (RuleEntry, bool) {
	for _, e := range np.Rules {
		if e.Direction == dir && e.Identity == id && e.Proto == proto && e.PortLo <= port && port <= e.PortHi {
			return e, true
		}
	}
	return RuleEntry{}, false
}
