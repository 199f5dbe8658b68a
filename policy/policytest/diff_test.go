package policytest_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/policy"
	"github.com/cvlan/cvlan/policy/policytest"
)

var (
	seedFlag = flag.Uint64("seed", 0, "seed of the differential test (0: a fixed default; see -random)")
	randFlag = flag.Bool("random", false, "seed the differential test from the clock")
	rounds   = flag.Int("rounds", 400, "random policies in the differential test")
)

func seed(t *testing.T) uint64 {
	s := *seedFlag
	switch {
	case s != 0:
	case *randFlag:
		s = uint64(time.Now().UnixNano())
	default:
		s = 20240601
	}
	t.Logf("seed %d (rerun with -seed %d)", s, s)
	return s
}

// simNode is one node's compiled policy as the data path holds it: an LPM table
// and the rule entries keyed by (direction, identity, protocol).
type simNode struct {
	prefixes []policy.IdentityPrefix // longest first
	entries  map[simKey][]policy.RuleEntry
	names    map[uint32]string
}

type simKey struct {
	dir   policy.Direction
	id    policy.Identity
	proto uint8
}

func newSim(t *testing.T, id string, np *policy.NodePolicy) *simNode {
	t.Helper()
	s := &simNode{entries: map[simKey][]policy.RuleEntry{}, names: np.RuleNames}
	s.prefixes = slices.Clone(np.Prefixes)
	sort.SliceStable(s.prefixes, func(i, j int) bool { return s.prefixes[i].Prefix.Bits() > s.prefixes[j].Prefix.Bits() })
	seen := map[netip.Prefix]bool{}
	for i, p := range np.Prefixes {
		if i > 0 {
			q := np.Prefixes[i-1].Prefix
			if c := q.Addr().Compare(p.Prefix.Addr()); c > 0 || c == 0 && q.Bits() > p.Prefix.Bits() {
				t.Fatalf("node %s: prefixes out of order: %s before %s", id, q, p.Prefix)
			}
		}
		if seen[p.Prefix] {
			t.Fatalf("node %s: prefix %s twice", id, p.Prefix)
		}
		seen[p.Prefix] = true
		if p.Identity == policy.IdentityWorld || p.Identity == policy.IdentityAny {
			t.Fatalf("node %s: prefix %s maps to reserved identity %d", id, p.Prefix, p.Identity)
		}
	}
	for _, e := range np.Rules {
		k := simKey{e.Direction, e.Identity, e.Proto}
		if l := s.entries[k]; len(l) > 0 && l[len(l)-1].PortHi >= e.PortLo {
			t.Fatalf("node %s: entries of %v overlap or are not sorted: %v then %v", id, k, l[len(l)-1], e)
		}
		if e.PortLo > e.PortHi {
			t.Fatalf("node %s: backwards entry %v", id, e)
		}
		if _, ok := np.RuleNames[e.RuleID]; !ok {
			t.Fatalf("node %s: entry %v has a rule id with no name", id, e)
		}
		s.entries[k] = append(s.entries[k], e)
	}
	// The IdentityAny entries are merged into every identity with entries of its
	// own: wherever Any has an entry, so does the identity.
	for k, l := range s.entries {
		if k.id == policy.IdentityAny {
			continue
		}
		for _, a := range s.entries[simKey{k.dir, policy.IdentityAny, k.proto}] {
			for _, port := range []uint16{a.PortLo, a.PortHi} {
				if _, ok := find(l, port); !ok {
					t.Fatalf("node %s: %v has no entry for port %d, which IdentityAny has (%v)", id, k, port, a)
				}
			}
		}
	}
	return s
}

func find(l []policy.RuleEntry, port uint16) (policy.RuleEntry, bool) {
	i := sort.Search(len(l), func(i int) bool { return l[i].PortHi >= port })
	if i < len(l) && l[i].PortLo <= port {
		return l[i], true
	}
	return policy.RuleEntry{}, false
}

func (s *simNode) lookup(dir policy.Direction, remote netip.Addr, proto uint8, port uint16) (policy.Verdict, string) {
	id := policy.IdentityWorld
	for _, p := range s.prefixes {
		if p.Prefix.Contains(remote) {
			id = p.Identity
			break
		}
	}
	e, ok := find(s.entries[simKey{dir, id, proto}], port)
	if !ok {
		e, ok = find(s.entries[simKey{dir, policy.IdentityAny, proto}], port)
	}
	if !ok {
		return policy.Deny, ""
	}
	return e.Verdict, s.names[e.RuleID]
}

// dataPath decides a packet the way the two ends' TC programs would, from the
// NodePolicies alone.
type dataPath struct {
	nodes map[string]*policy.Node
	sims  map[string]*simNode
}

func newDataPath(t *testing.T, c *policy.Compiled, nodes []policy.Node) *dataPath {
	dp := &dataPath{nodes: map[string]*policy.Node{}, sims: map[string]*simNode{}}
	for i := range nodes {
		dp.nodes[nodes[i].ID] = &nodes[i]
		dp.sims[nodes[i].ID] = newSim(t, nodes[i].ID, c.Node(nodes[i].ID))
	}
	return dp
}

func fam(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func (dp *dataPath) first(n *policy.Node, f int) netip.Addr {
	for _, a := range n.Addrs {
		if fam(a) == f {
			return a
		}
	}
	return netip.Addr{}
}

func (dp *dataPath) owner(a netip.Addr) *policy.Node {
	var best *policy.Node
	bits := -1
	for _, n := range dp.nodes {
		if slices.Contains(n.Addrs, a) {
			return n
		}
		for _, r := range n.Routes {
			if r.Contains(a) && (r.Bits() > bits || r.Bits() == bits && n.ID < best.ID) {
				best, bits = n, r.Bits()
			}
		}
	}
	return best
}

func (dp *dataPath) simple(n *policy.Node, f int) bool {
	addrs := 0
	for _, a := range n.Addrs {
		if fam(a) == f {
			addrs++
		}
	}
	for _, r := range n.Routes {
		if fam(r.Addr()) == f {
			return false
		}
	}
	return addrs == 1
}

type endRes struct {
	present, simple bool
	v               policy.Verdict
	rule            string
}

func (dp *dataPath) decide(pk policytest.Packet) (policy.Verdict, string) {
	type end struct {
		node  *policy.Node // enforcing
		addr  netip.Addr
		isNod bool
	}
	var ends [2]end
	fixed := -1
	for i, e := range []policy.Endpoint{pk.Src, pk.Dst} {
		if e.NodeID != "" {
			ends[i] = end{node: dp.nodes[e.NodeID], isNod: true}
			if ends[i].node == nil {
				return policy.Deny, ""
			}
			continue
		}
		ends[i] = end{node: dp.owner(e.Addr), addr: e.Addr}
		if fixed >= 0 && fixed != fam(e.Addr) {
			return policy.Deny, ""
		}
		fixed = fam(e.Addr)
	}
	f := -1
	for cand := range 2 {
		if fixed >= 0 && cand != fixed {
			continue
		}
		if (!ends[0].isNod || dp.first(ends[0].node, cand).IsValid()) && (!ends[1].isNod || dp.first(ends[1].node, cand).IsValid()) {
			f = cand
			break
		}
	}
	if f < 0 {
		return policy.Deny, ""
	}
	for i := range ends {
		if ends[i].isNod {
			ends[i].addr = dp.first(ends[i].node, f)
		}
	}
	check := func(e end, dir policy.Direction, remote netip.Addr) endRes {
		if e.node == nil {
			return endRes{}
		}
		v, rule := dp.sims[e.node.ID].lookup(dir, remote, pk.Proto, pk.Port)
		return endRes{present: true, simple: dp.simple(e.node, f), v: v, rule: rule}
	}
	d, s := check(ends[1], policy.Ingress, ends[0].addr), check(ends[0], policy.Egress, ends[1].addr)
	order := []endRes{d, s}
	if !d.simple && s.simple {
		order = []endRes{s, d}
	}
	order = slices.DeleteFunc(order, func(e endRes) bool { return !e.present })
	if len(order) == 0 {
		return policy.Deny, ""
	}
	for _, e := range order {
		if e.v != policy.Accept {
			return policy.Deny, e.rule
		}
	}
	return policy.Accept, order[0].rule
}

// TestDifferential compiles random policies and checks, on random packets, that
// the data path's view of the compiled NodePolicies, Compiled.Decide and the naive
// evaluator agree on the verdict and the deciding rule; that the document's tests
// (random ones, expectations from the naive evaluator) pass, and fail when flipped;
// and that accepted flows are between peers.
func TestDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(seed(t), 1))
	n := *rounds
	if testing.Short() {
		n /= 10
	}
	packets, accepted := 0, 0
	for round := range n {
		cfg := policytest.DefaultConfig
		if round%10 == 9 {
			cfg = policytest.Config{Nodes: 30, Rules: 25, Groups: 5, Hosts: 5}
		}
		g := policytest.NewRandom(r, cfg)
		fail := func(format string, args ...any) {
			t.Helper()
			var nodes strings.Builder
			for _, nd := range g.Nodes {
				fmt.Fprintf(&nodes, "  %+v\n", nd)
			}
			t.Fatalf("round %d: %s\npolicy:\n%s\nnodes:\n%s", round, fmt.Sprintf(format, args...), g.Doc, nodes.String())
		}
		p, err := policy.Parse(g.Doc)
		if err != nil {
			fail("generated policy does not parse: %v", err)
		}
		c, err := policy.Compile(p, g.Nodes)
		if err != nil {
			fail("compile: %v", err)
		}
		ev := policytest.New(p, g.Nodes)
		dp := newDataPath(t, c, g.Nodes)
		peers := map[string][]string{}
		for _, nd := range g.Nodes {
			peers[nd.ID] = c.Peers(nd.ID)
		}
		for _, nd := range g.Nodes {
			ps := c.PeerSet(nd.ID)
			for _, o := range g.Nodes {
				if want := slices.Contains(peers[nd.ID], o.ID); ps.Has(o.ID) != want {
					fail("PeerSet(%s).Has(%s) = %v, Peers says %v", nd.ID, o.ID, !want, want)
				}
			}
			if c.PeerSet("no-such-node") != nil || ps.Has("no-such-node") {
				fail("PeerSet of or with an unknown node")
			}
		}
		for range 60 {
			pk := g.Packet(r)
			packets++
			wantV, wantRule := ev.Decide(pk.Src, pk.Dst, pk.Proto, pk.Port)
			gotV, gotRule := dp.decide(pk)
			if gotV != wantV || gotRule != wantRule {
				fail("%v: data path says %v %q, naive evaluator %v %q", pk, gotV, gotRule, wantV, wantRule)
			}
			if v, rule := c.Decide(pk.Src, pk.Dst, pk.Proto, pk.Port); v != wantV || rule != wantRule {
				fail("%v: Compiled.Decide says %v %q, naive evaluator %v %q", pk, v, rule, wantV, wantRule)
			}
			if wantV == policy.Accept {
				accepted++
				checkPeers(t, fail, dp, peers, pk)
			}
		}
		checkTests(r, g, p, ev, fail)
	}
	t.Logf("%d policies, %d packets, %d accepted", n, packets, accepted)
	if accepted < packets/20 {
		t.Errorf("only %d of %d packets accepted: the generator is too strict to test much", accepted, packets)
	}
}

// checkPeers: the enforcing nodes of an accepted flow between two nodes are peers.
func checkPeers(t *testing.T, fail func(string, ...any), dp *dataPath, peers map[string][]string, pk policytest.Packet) {
	t.Helper()
	node := func(e policy.Endpoint) *policy.Node {
		if e.NodeID != "" {
			return dp.nodes[e.NodeID]
		}
		return dp.owner(e.Addr)
	}
	s, d := node(pk.Src), node(pk.Dst)
	if s == nil || d == nil || s == d {
		return
	}
	if !slices.Contains(peers[s.ID], d.ID) || !slices.Contains(peers[d.ID], s.ID) {
		fail("%v is accepted but %s and %s are not each other's peers (%v; %v)", pk, s.ID, d.ID, peers[s.ID], peers[d.ID])
	}
}

// checkTests adds random tests whose expectations come from the naive evaluator:
// Compile must accept them, and reject the policy when one is flipped.
func checkTests(r *rand.Rand, g *policytest.Random, p *policy.Policy, ev *policytest.Evaluator, fail func(string, ...any)) {
	var tests []policy.Test
	for len(tests) < 8 {
		src, err1 := policy.ParseSelector(g.TestEndpoint(r))
		dst, err2 := policy.ParseSelector(g.TestEndpoint(r))
		if err := errors.Join(err1, err2); err != nil {
			fail("test endpoint: %v", err)
		}
		proto := []policy.Protocol{policy.TCP, policy.UDP, policy.ICMP}[r.IntN(3)]
		var port uint16
		if proto != policy.ICMP {
			port = []uint16{22, 53, 80, 443, 8050, 8080, 1500}[r.IntN(7)]
		}
		v, rule, ok := ev.DecideTest(src, dst, proto, port)
		if !ok {
			continue
		}
		tests = append(tests, policy.Test{Src: src, Dst: dst, Proto: proto, Port: port, Expect: v, Rule: rule,
			Loc: policy.Loc{Line: 1000 + len(tests), Path: fmt.Sprintf("tests[%d]", len(tests))}})
	}
	p.Tests = tests
	if _, err := policy.Compile(p, g.Nodes); err != nil {
		fail("tests computed by the naive evaluator fail:\n%v", err)
	}
	i := r.IntN(len(tests))
	flipped := slices.Clone(tests)
	flipped[i].Expect = 1 - flipped[i].Expect
	flipped[i].Rule = ""
	if ev.Passes(flipped[i]) {
		fail("naive evaluator passes flipped test %+v", flipped[i])
	}
	p.Tests = flipped
	_, err := policy.Compile(p, g.Nodes)
	var errs policy.Errors
	if !errors.As(err, &errs) || len(errs) == 0 || errs[0].Path != flipped[i].Loc.Path {
		fail("flipped test %d (%v → %v) was not reported: %v", i, flipped[i].Src, flipped[i].Dst, err)
	}
	p.Tests = nil
}
