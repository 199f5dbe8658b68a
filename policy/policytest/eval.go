package policytest

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/cvlan/cvlan/policy"
)

// Evaluator answers policy questions by looping over the rules.
type Evaluator struct {
	p     *policy.Policy
	nodes []policy.Node // sorted by ID
	hosts map[string]netip.Prefix
	group map[string][]policy.Selector
	cidrs []netip.Prefix // every prefix the document names
}

// New returns an evaluator of p (which must be valid) for nodes.
func New(p *policy.Policy, nodes []policy.Node) *Evaluator {
	e := &Evaluator{p: p, nodes: slices.Clone(nodes), hosts: map[string]netip.Prefix{}, group: map[string][]policy.Selector{}}
	sort.SliceStable(e.nodes, func(i, j int) bool { return e.nodes[i].ID < e.nodes[j].ID })
	for _, h := range p.Hosts {
		e.hosts[h.Name] = h.Prefix
		e.cidrs = append(e.cidrs, h.Prefix)
	}
	for _, g := range p.Groups {
		e.group[g.Name] = g.Members
	}
	for _, r := range p.Rules {
		for _, s := range append(slices.Clone(r.Src), r.Dst...) {
			if s.Kind == policy.SelectPrefix {
				e.cidrs = append(e.cidrs, s.Prefix)
			}
		}
	}
	return e
}

// thing is what a selector is matched against: a node's own address, an address
// that is no node's (node nil), or a hypothetical node (addr invalid).
type thing struct {
	node *policy.Node
	addr netip.Addr
}

func (e *Evaluator) matches(s policy.Selector, x thing) bool {
	switch s.Kind {
	case policy.SelectAll:
		return true
	case policy.SelectTag:
		return x.node != nil && slices.Contains(x.node.Tags, s.Name)
	case policy.SelectNode:
		return x.node != nil && x.node.Name == s.Name
	case policy.SelectGroup:
		for _, m := range e.group[s.Name] {
			if e.matches(m, x) {
				return true
			}
		}
		return false
	case policy.SelectHost:
		return x.addr.IsValid() && e.hosts[s.Name].Contains(x.addr)
	case policy.SelectPrefix:
		return x.addr.IsValid() && s.Prefix.Contains(x.addr)
	}
	return false
}

func (e *Evaluator) any(sels []policy.Selector, x thing) bool {
	for _, s := range sels {
		if e.matches(s, x) {
			return true
		}
	}
	return false
}

// covers says whether rule r matches IP protocol proto on port: TCP and UDP by
// its ports; ICMP and ICMPv6 only when its ports are "*".
func covers(r *policy.Rule, proto uint8, port uint16) bool {
	switch proto {
	case policy.ProtoTCP, policy.ProtoUDP:
		if r.Proto != policy.AnyProtocol && !(r.Proto == policy.TCP && proto == policy.ProtoTCP) &&
			!(r.Proto == policy.UDP && proto == policy.ProtoUDP) {
			return false
		}
		for _, pr := range r.Ports {
			if pr.Lo <= port && port <= pr.Hi {
				return true
			}
		}
	case policy.ProtoICMP, policy.ProtoICMPv6:
		return (r.Proto == policy.AnyProtocol || r.Proto == policy.ICMP) &&
			len(r.Ports) == 1 && r.Ports[0] == policy.AllPorts
	}
	return false
}

// point returns the first accept rule and the first deny rule (or -1) matching a
// packet from src to dst.
func (e *Evaluator) point(src, dst thing, proto uint8, port uint16) (acc, den int) {
	acc, den = -1, -1
	for i := range e.p.Rules {
		r := &e.p.Rules[i]
		if !covers(r, proto, port) || !e.any(r.Src, src) || !e.any(r.Dst, dst) {
			continue
		}
		if r.Action == policy.Accept && acc < 0 {
			acc = i
		}
		if r.Action == policy.Deny && den < 0 {
			den = i
		}
	}
	return acc, den
}

// end is a flow's end for one check: the points that stand for the enforcing node
// (its own addresses and the parts of its routes), and whether there is one.
type end struct {
	present bool
	points  []thing
	simple  bool
}

func fam(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// nodeEnd lists a node's points in family f: its addresses, and an address in each
// part of its routes that the document's prefixes cut out (the route's start, and
// the start and the address just past each prefix inside it).
func (e *Evaluator) nodeEnd(n *policy.Node, f int) end {
	out := end{present: true}
	nAddr, nRoute := 0, 0
	for _, a := range n.Addrs {
		if fam(a) == f {
			out.points = append(out.points, thing{node: n, addr: a})
			nAddr++
		}
	}
	for _, r := range n.Routes {
		if fam(r.Addr()) != f {
			continue
		}
		nRoute++
		out.points = append(out.points, thing{addr: r.Addr()})
		for _, q := range e.cidrs {
			if q.Bits() > r.Bits() && r.Contains(q.Addr()) {
				out.points = append(out.points, thing{addr: q.Addr()})
				if next := last(q).Next(); next.IsValid() && r.Contains(next) {
					out.points = append(out.points, thing{addr: next})
				}
			}
		}
	}
	out.simple = nAddr == 1 && nRoute == 0
	return out
}

func last(p netip.Prefix) netip.Addr {
	a := p.Addr()
	for i := p.Bits(); i < a.BitLen(); i++ {
		b := a.AsSlice()
		b[i/8] |= 0x80 >> (i % 8)
		a, _ = netip.AddrFromSlice(b)
	}
	return a
}

// check is one end's check: ingress has remote as source, egress as destination.
// Each point decides alone (deny over accept, first rule wins); the end accepts if
// any point accepts.
func (e *Evaluator) check(en end, remote thing, dir policy.Direction, proto uint8, port uint16) result {
	if !en.present {
		return result{}
	}
	bestAcc, bestDen := -1, -1
	for _, pt := range en.points {
		src, dst := remote, pt
		if dir == policy.Egress {
			src, dst = pt, remote
		}
		acc, den := e.point(src, dst, proto, port)
		if acc >= 0 && den < 0 && (bestAcc < 0 || acc < bestAcc) {
			bestAcc = acc
		}
		if den >= 0 && (bestDen < 0 || den < bestDen) {
			bestDen = den
		}
	}
	res := result{present: true, simple: en.simple, verdict: policy.Deny}
	switch {
	case bestAcc >= 0:
		res.verdict, res.rule = policy.Accept, e.p.Rules[bestAcc].Name
	case bestDen >= 0:
		res.rule = e.p.Rules[bestDen].Name
	}
	return res
}

type result struct {
	present bool
	verdict policy.Verdict
	rule    string
	simple  bool
}

// join: both present ends must accept; the verdict is named by the destination's
// end unless only the source's end is simple, and a denial by the first end in
// that order that denies.
func join(dst, src result) (policy.Verdict, string) {
	first, second := dst, src
	if !dst.simple && src.simple {
		first, second = src, dst
	}
	var ends []result
	for _, r := range []result{first, second} {
		if r.present {
			ends = append(ends, r)
		}
	}
	if len(ends) == 0 {
		return policy.Deny, ""
	}
	for _, r := range ends {
		if r.verdict != policy.Accept {
			return policy.Deny, r.rule
		}
	}
	return policy.Accept, ends[0].rule
}
