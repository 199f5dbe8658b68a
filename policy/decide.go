package policy

import (
	"fmt"
	"net/netip"
	"slices"
)

// Endpoint is one end of a flow for Decide: a node, by ID, or an address.
type Endpoint struct {
	NodeID string     // set for a node
	Addr   netip.Addr // set for an address
}

// NodeEndpoint is the node with ID id.
func NodeEndpoint(id string) Endpoint { return Endpoint{NodeID: id} }

// AddrEndpoint is the address a (an overlay address, or one in a node's route).
func AddrEndpoint(a netip.Addr) Endpoint { return Endpoint{Addr: a.Unmap().WithZone("")} }

// ParseEndpoint reads an IP address as an address and anything else as a node ID.
func ParseEndpoint(s string) Endpoint {
	if a, err := netip.ParseAddr(s); err == nil {
		return AddrEndpoint(a)
	}
	return NodeEndpoint(s)
}

func (e Endpoint) String() string {
	if e.NodeID != "" {
		return e.NodeID
	}
	return e.Addr.String()
}

// flowEnd is one end of a flow: an address, and the node that enforces policy for
// it (the node owning the address, or routing the subnet it is in), or -1.
type flowEnd struct {
	node int32
	addr netip.Addr
}

// owner returns the node whose overlay address a is, else the node advertising the
// longest route containing a (the first by ID on a tie), else -1.
func (c *Compiled) owner(a netip.Addr) int32 {
	if o, ok := c.hostOwner[a]; ok {
		return o
	}
	for _, r := range c.routes {
		if r.prefix.Contains(a) {
			return r.node
		}
	}
	return -1
}

// flow resolves two endpoints to addresses of one family: an address endpoint
// fixes the family; two nodes use IPv4 if both have it, else IPv6. ok is false for
// an unknown node or when no family is common.
func (c *Compiled) flow(src, dst Endpoint) (s, d flowEnd, f uint8, ok bool) {
	ends := [2]*flowEnd{&s, &d}
	fixed := -1
	for i, e := range [2]Endpoint{src, dst} {
		if e.NodeID != "" {
			n, known := c.byID[e.NodeID]
			if !known {
				return s, d, 0, false
			}
			ends[i].node = n
			continue
		}
		if !e.Addr.IsValid() {
			return s, d, 0, false
		}
		a := e.Addr.Unmap().WithZone("")
		*ends[i] = flowEnd{node: c.owner(a), addr: a}
		if fixed >= 0 && fixed != int(family(a)) {
			return s, d, 0, false
		}
		fixed = int(family(a))
	}
	f, ok = c.pickFamily(fixed, src.NodeID != "", s.node, dst.NodeID != "", d.node)
	if !ok {
		return s, d, 0, false
	}
	for i, e := range [2]Endpoint{src, dst} {
		if e.NodeID != "" {
			ends[i].addr = c.nodes[ends[i].node].addr[f]
		}
	}
	return s, d, f, true
}

// pickFamily chooses the family of a flow whose address endpoints fixed it (or -1)
// and whose node endpoints (isNode) must have an address of it.
func (c *Compiled) pickFamily(fixed int, srcIsNode bool, sn int32, dstIsNode bool, dn int32) (uint8, bool) {
	has := func(f int) bool {
		return (!srcIsNode || c.nodes[sn].addr[f].IsValid()) && (!dstIsNode || c.nodes[dn].addr[f].IsValid())
	}
	if fixed >= 0 {
		return uint8(fixed), has(fixed)
	}
	for f := range 2 {
		if has(f) {
			return uint8(f), true
		}
	}
	return 0, false
}

// endResult is what one end's check decided.
type endResult struct {
	present bool
	verdict Verdict
	rule    string // the deciding rule, "" for default deny
	simple  bool   // the end's node has one address of the family and no route
}

// combine joins the two ends' checks: a flow passes if every enforcing end accepts
// it (no end enforces a flow between two addresses outside the overlay: denied).
// The verdict and rule are named by the destination's end, unless only the source's
// end is simple (one address, no routes), which makes its check exact; a denied
// flow is named by the first end, in that order, that denies it.
func combine(dst, src endResult) (Verdict, string) {
	order := []endResult{dst, src}
	if !dst.simple && src.simple {
		order[0], order[1] = src, dst
	}
	order = slices.DeleteFunc(order, func(e endResult) bool { return !e.present })
	if len(order) == 0 {
		return Deny, ""
	}
	for _, e := range order {
		if e.verdict != Accept {
			return Deny, e.rule
		}
	}
	return Accept, order[0].rule
}

// Decide answers whether a packet from src to dst with IP protocol proto and
// destination port port passes, and names the deciding rule ("" when nothing
// accepts it). It does what the data path does with the two ends' NodePolicies:
// the destination's node checks it on ingress (remote: the source address), the
// source's node on egress (remote: the destination address), and it passes only
// if both accept. An address's node is the node owning it or advertising a route
// to it. Two nodes talk over IPv4 when both have it, else over IPv6. An unknown
// node, or two endpoints with no common address family, is denied.
func (c *Compiled) Decide(src, dst Endpoint, proto uint8, port uint16) (Verdict, string) {
	s, d, f, ok := c.flow(src, dst)
	if !ok {
		return Deny, ""
	}
	check := func(end flowEnd, dir Direction, remote netip.Addr) endResult {
		if end.node < 0 {
			return endResult{}
		}
		np := c.nodePolicy(c.viewOf(end.node))
		res := endResult{present: true, simple: c.nodes[end.node].simple[f]}
		if e, ok := np.Lookup(dir, remote, proto, port); ok {
			res.verdict, res.rule = e.Verdict, np.RuleNames[e.RuleID]
		}
		return res
	}
	return combine(check(d, Ingress, s.addr), check(s, Egress, d.addr))
}

// testEnd is one concrete endpoint of a test.
type testEnd struct {
	label string
	kind  endKind
	node  int32      // the node (endNode), the address's enforcing node or -1 (endAddr)
	tags  []string   // of an endVirtual
	name  string     // of an endVirtual
	addr  netip.Addr // of an endAddr; of an endNode once the family is known
}

type endKind uint8

const (
	endNode    endKind = iota // a node, through its address of the flow's family
	endAddr                   // an address
	endVirtual                // a hypothetical node: tags and a name, no address
)

// Check runs tests (written against the compiled policy's document) and returns
// Errors naming each that fails, or nil. Compile runs the document's own tests.
func (c *Compiled) Check(tests []Test) error {
	var errs Errors
	for i := range tests {
		c.check(&errs, &tests[i])
	}
	return errs.errOrNil()
}

const (
	maxFailuresPerTest = 5
	maxTestPairs       = 10000
)

func (c *Compiled) check(errs *Errors, t *Test) {
	before := len(*errs)
	c.names.checkTest(errs, t, func(name string) bool { return c.ruleIndex[name] > 0 })
	if len(*errs) > before {
		return
	}
	srcs, dsts := c.testEnds(t.Src), c.testEnds(t.Dst)
	if n := len(srcs) * len(dsts); n > maxTestPairs {
		errs.add(t.Loc, "test covers %d pairs of endpoints, more than %d; test smaller groups", n, maxTestPairs)
		return
	}
	failures := 0
	for _, s := range srcs {
		for _, d := range dsts {
			msg := c.checkPair(t, s, d)
			if msg == "" {
				continue
			}
			failures++
			if failures <= maxFailuresPerTest {
				errs.add(t.Loc, "test failed: %s", msg)
			}
		}
	}
	if failures > maxFailuresPerTest {
		errs.add(t.Loc, "test failed for %d more pairs of members", failures-maxFailuresPerTest)
	}
}

// checkPair evaluates one (src, dst) of a test and describes a failure, or "".
func (c *Compiled) checkPair(t *Test, s, d testEnd) string {
	what := fmt.Sprintf("%s → %s %s", s.label, d.label, t.Proto)
	if t.Proto != ICMP {
		what += fmt.Sprintf("/%d", t.Port)
	}
	f, err := c.testFamily(&s, &d)
	if err != "" {
		return what + ": " + err
	}
	proto := t.Proto.Numbers()[0]
	if t.Proto == ICMP && f == 1 {
		proto = ProtoICMPv6
	}
	v, rule := combine(c.testCheck(d, s, Ingress, f, proto, t.Port), c.testCheck(s, d, Egress, f, proto, t.Port))
	if v == t.Expect && (t.Rule == "" || rule == t.Rule) {
		return ""
	}
	got := describe(v, rule)
	want := t.Expect.String()
	if t.Rule != "" {
		want += fmt.Sprintf(" by rule %q", t.Rule)
	}
	return fmt.Sprintf("%s: %s, want %s", what, got, want)
}

func describe(v Verdict, rule string) string {
	switch {
	case v == Accept:
		return fmt.Sprintf("accepted by rule %q", rule)
	case rule != "":
		return fmt.Sprintf("denied by rule %q", rule)
	}
	return "denied (no rule accepts it)"
}

// testFamily picks the family of a test flow the way Decide does, fills in node
// addresses, and says what is wrong when no family fits.
func (c *Compiled) testFamily(s, d *testEnd) (uint8, string) {
	fixed := -1
	for _, e := range []*testEnd{s, d} {
		if e.kind == endAddr {
			if fixed >= 0 && fixed != int(family(e.addr)) {
				return 0, "src and dst are of different address families"
			}
			fixed = int(family(e.addr))
		}
	}
	f, ok := c.pickFamily(fixed, s.kind == endNode, s.node, d.kind == endNode, d.node)
	if !ok {
		return 0, "the endpoints have no address family in common"
	}
	for _, e := range []*testEnd{s, d} {
		if e.kind == endNode {
			e.addr = c.nodes[e.node].addr[f]
		}
	}
	return f, ""
}

func (n *cnode) label() string {
	if n.Name != "" && n.Name != n.ID {
		return n.Name + " (" + n.ID + ")"
	}
	return n.ID
}

// testEnds expands a test selector into concrete endpoints.
func (c *Compiled) testEnds(s Selector) []testEnd {
	switch s.Kind {
	case SelectTag, SelectNode:
		return c.leafEnds(s, "")
	case SelectGroup:
		var out []testEnd
		for _, l := range c.names.leaves(s, map[string][]Selector{}) {
			out = append(out, c.leafEnds(l, " (in "+s.String()+")")...)
		}
		return out
	case SelectHost:
		a := c.names.hosts[s.Name].Addr()
		return []testEnd{{label: s.String(), kind: endAddr, node: c.owner(a), addr: a}}
	case SelectPrefix:
		a := s.Prefix.Addr()
		return []testEnd{{label: a.String(), kind: endAddr, node: c.owner(a), addr: a}}
	}
	return nil
}

func (c *Compiled) leafEnds(s Selector, suffix string) []testEnd {
	if s.Kind == SelectTag {
		return []testEnd{{label: s.String() + suffix, kind: endVirtual, node: -1, tags: []string{s.Name}}}
	}
	var out []testEnd
	for i := range c.nodes {
		nd := &c.nodes[i]
		if nd.Name != s.Name {
			continue
		}
		if len(nd.Addrs) == 0 {
			out = append(out, testEnd{label: nd.label() + suffix, kind: endVirtual, node: -1, tags: nd.Tags, name: nd.Name})
		} else {
			out = append(out, testEnd{label: nd.label() + suffix, kind: endNode, node: int32(i)})
		}
	}
	if len(out) == 0 {
		out = append(out, testEnd{label: s.Name + suffix, kind: endVirtual, node: -1, name: s.Name})
	}
	return out
}

// testCheck is one end's check of a test flow: local is the end doing the check,
// remote the other. It decides with the same resolver as the compiled entries.
func (c *Compiled) testCheck(local, remote testEnd, dir Direction, f uint8, proto uint8, port uint16) endResult {
	var locals [][]int32
	res := endResult{present: true, simple: true}
	var b sidesBuilder
	switch {
	case local.kind == endVirtual:
		c.nodeSides(&b, local.tags, local.name)
		locals = append(locals, slices.Clone(b.result()))
	case local.node >= 0:
		for _, l := range c.nodes[local.node].local[f] {
			locals = append(locals, c.classes[l].sides)
		}
		res.simple = c.nodes[local.node].simple[f]
	default:
		return endResult{}
	}
	b.reset()
	switch {
	case remote.kind == endVirtual:
		c.nodeSides(&b, remote.tags, remote.name)
	default:
		if o, ok := c.hostOwner[remote.addr]; ok {
			c.nodeSides(&b, c.nodes[o].Tags, c.nodes[o].Name)
		}
		c.cidrSides(&b, hostPrefix(remote.addr))
	}
	remoteSides := b.result()
	lists := make([][]int32, len(locals))
	for i, l := range locals {
		for _, r := range c.relevant(l, dir) {
			if c.rules[r].star[1-localKind(dir)] {
				lists[i] = append(lists[i], r)
			} else if _, ok := slices.BinarySearch(remoteSides, remoteSide(r, dir)); ok {
				lists[i] = append(lists[i], r)
			}
		}
	}
	var rs resolver
	for _, s := range rs.resolve(c.rules, lists, proto) {
		if s.lo <= port && port <= s.hi {
			res.verdict, res.rule = s.verdict, c.rules[s.rule].name
		}
	}
	return res
}
