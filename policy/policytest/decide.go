package policytest

import (
	"net/netip"

	"github.com/cvlan/cvlan/policy"
)

func (e *Evaluator) byID(id string) *policy.Node {
	for i := range e.nodes {
		if e.nodes[i].ID == id {
			return &e.nodes[i]
		}
	}
	return nil
}

func (e *Evaluator) hostOwner(a netip.Addr) *policy.Node {
	for i := range e.nodes {
		for _, b := range e.nodes[i].Addrs {
			if b == a {
				return &e.nodes[i]
			}
		}
	}
	return nil
}

// owner is the node owning a, else the one with the longest route to it (the
// first by ID on a tie), else nil.
func (e *Evaluator) owner(a netip.Addr) *policy.Node {
	if n := e.hostOwner(a); n != nil {
		return n
	}
	var best *policy.Node
	bits := -1
	for i := range e.nodes {
		for _, r := range e.nodes[i].Routes {
			if r.Contains(a) && r.Bits() > bits {
				best, bits = &e.nodes[i], r.Bits()
			}
		}
	}
	return best
}

func firstAddr(n *policy.Node, f int) netip.Addr {
	for _, a := range n.Addrs {
		if fam(a) == f {
			return a
		}
	}
	return netip.Addr{}
}

// ep is one end of a flow.
type ep struct {
	kind  int          // node, address or virtual
	node  *policy.Node // the node itself, or a hypothetical one
	addr  netip.Addr
	owner *policy.Node // enforcing node of an address
}

const (
	kNode = iota
	kAddr
	kVirtual
)

// flow picks the family and decides, as both ends check it.
func (e *Evaluator) flow(s, d ep, proto policy.Protocol, ipProto uint8, port uint16) (policy.Verdict, string, bool) {
	fixed := -1
	for _, x := range []ep{s, d} {
		if x.kind == kAddr {
			if fixed >= 0 && fixed != fam(x.addr) {
				return policy.Deny, "", false
			}
			fixed = fam(x.addr)
		}
	}
	f := -1
	for _, cand := range []int{0, 1} {
		if fixed >= 0 && cand != fixed {
			continue
		}
		ok := true
		for _, x := range []ep{s, d} {
			if x.kind == kNode && !firstAddr(x.node, cand).IsValid() {
				ok = false
			}
		}
		if ok {
			f = cand
			break
		}
	}
	if f < 0 {
		return policy.Deny, "", false
	}
	if proto == policy.ICMP {
		ipProto = policy.ProtoICMP
		if f == 1 {
			ipProto = policy.ProtoICMPv6
		}
	}
	remote := func(x ep) thing {
		switch x.kind {
		case kNode:
			return thing{node: x.node, addr: firstAddr(x.node, f)}
		case kAddr:
			return thing{node: e.hostOwner(x.addr), addr: x.addr}
		}
		return thing{node: x.node}
	}
	local := func(x ep) end {
		switch x.kind {
		case kNode:
			return e.nodeEnd(x.node, f)
		case kAddr:
			if x.owner == nil {
				return end{}
			}
			return e.nodeEnd(x.owner, f)
		}
		return end{present: true, simple: true, points: []thing{{node: x.node}}}
	}
	dr := e.check(local(d), remote(s), policy.Ingress, ipProto, port)
	sr := e.check(local(s), remote(d), policy.Egress, ipProto, port)
	v, rule := join(dr, sr)
	return v, rule, true
}

// Decide answers like (*policy.Compiled).Decide.
func (e *Evaluator) Decide(src, dst policy.Endpoint, proto uint8, port uint16) (policy.Verdict, string) {
	var eps [2]ep
	for i, x := range []policy.Endpoint{src, dst} {
		if x.NodeID != "" {
			n := e.byID(x.NodeID)
			if n == nil {
				return policy.Deny, ""
			}
			eps[i] = ep{kind: kNode, node: n}
			continue
		}
		a := x.Addr.Unmap()
		eps[i] = ep{kind: kAddr, addr: a, owner: e.owner(a)}
	}
	v, rule, _ := e.flow(eps[0], eps[1], policy.AnyProtocol, proto, port)
	return v, rule
}

// testEnds expands a test endpoint: tag:NAME is a hypothetical node with only that
// tag; a node name is each node so named (a node without addresses, or a name no
// node has, is a hypothetical node); an IP or host:NAME is that address (the
// host's first); group:NAME is each member in turn.
func (e *Evaluator) testEnds(s policy.Selector) []ep {
	switch s.Kind {
	case policy.SelectTag:
		return []ep{{kind: kVirtual, node: &policy.Node{Tags: []string{s.Name}}}}
	case policy.SelectNode:
		var out []ep
		for i := range e.nodes {
			n := &e.nodes[i]
			if n.Name != s.Name {
				continue
			}
			if len(n.Addrs) == 0 {
				out = append(out, ep{kind: kVirtual, node: &policy.Node{Name: n.Name, Tags: n.Tags}})
			} else {
				out = append(out, ep{kind: kNode, node: n})
			}
		}
		if out == nil {
			out = []ep{{kind: kVirtual, node: &policy.Node{Name: s.Name}}}
		}
		return out
	case policy.SelectGroup:
		var out []ep
		for _, m := range e.group[s.Name] {
			out = append(out, e.testEnds(m)...)
		}
		return out
	case policy.SelectHost:
		a := e.hosts[s.Name].Addr()
		return []ep{{kind: kAddr, addr: a, owner: e.owner(a)}}
	case policy.SelectPrefix:
		a := s.Prefix.Addr()
		return []ep{{kind: kAddr, addr: a, owner: e.owner(a)}}
	}
	return nil
}

// DecideTest answers a test's question for one pair of endpoints (the first of
// each expansion); ok is false when the endpoints share no address family.
func (e *Evaluator) DecideTest(src, dst policy.Selector, proto policy.Protocol, port uint16) (v policy.Verdict, rule string, ok bool) {
	s, d := e.testEnds(src), e.testEnds(dst)
	if len(s) == 0 || len(d) == 0 {
		return policy.Deny, "", false
	}
	return e.flow(s[0], d[0], proto, proto.Numbers()[0], port)
}

// Passes reports whether a test holds for every pair of its endpoints' members.
func (e *Evaluator) Passes(t policy.Test) bool {
	for _, s := range e.testEnds(t.Src) {
		for _, d := range e.testEnds(t.Dst) {
			v, rule, ok := e.flow(s, d, t.Proto, t.Proto.Numbers()[0], t.Port)
			if !ok || v != t.Expect || (t.Rule != "" && rule != t.Rule) {
				return false
			}
		}
	}
	return true
}
