package policy_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/policy"
)

func mustCompile(t *testing.T, doc string, nodes []policy.Node) *policy.Compiled {
	t.Helper()
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	c, err := policy.Compile(p, nodes)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return c
}

func node(id string, tags []string, addrs ...string) policy.Node {
	n := policy.Node{ID: id, Name: id, Tags: tags}
	for _, a := range addrs {
		if strings.Contains(a, "/") {
			n.Routes = append(n.Routes, netip.MustParsePrefix(a))
		} else {
			n.Addrs = append(n.Addrs, netip.MustParseAddr(a))
		}
	}
	return n
}

var tenant = []policy.Node{
	node("admin", []string{"admin"}, "100.64.0.1", "fd7a::1"),
	node("web1", []string{"web"}, "100.64.0.2", "fd7a::2"),
	node("web2", []string{"web"}, "100.64.0.3", "fd7a::3"),
	node("db", []string{"db"}, "100.64.0.4"),
	node("v6only", []string{"web"}, "fd7a::5"),
	node("gw", nil, "100.64.0.6", "10.1.0.0/16"),
}

type flow struct {
	src, dst string // node IDs or addresses
	proto    uint8
	port     uint16
	want     string // "accept RULE", "deny RULE" or "deny"
}

func checkFlows(t *testing.T, c *policy.Compiled, flows []flow) {
	t.Helper()
	for _, f := range flows {
		v, rule := c.Decide(policy.ParseEndpoint(f.src), policy.ParseEndpoint(f.dst), f.proto, f.port)
		got := strings.TrimSpace(v.String() + " " + rule)
		if got != f.want {
			t.Errorf("%s → %s %s/%d: %s, want %s", f.src, f.dst, policy.ProtoName(f.proto), f.port, got, f.want)
		}
	}
}

const tcp, udp, icmp, icmp6 = policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoICMPv6

func TestDenyOverridesAccept(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
rules:
  - {name: wide, src: tag:web, dst: tag:db, ports: ["1-65535"]}
  - {name: no-telnet, action: deny, src: "*", dst: tag:db, ports: [23], proto: tcp}
  - {name: later-accept, src: tag:web, dst: tag:db, ports: [23]}
`, tenant)
	checkFlows(t, c, []flow{
		{"web1", "db", tcp, 22, "accept wide"},
		{"web1", "db", tcp, 23, "deny no-telnet"},
		{"web1", "db", udp, 23, "accept wide"},
		{"admin", "db", tcp, 23, "deny no-telnet"},
		{"admin", "db", tcp, 22, "deny"},
		{"db", "web1", tcp, 22, "deny"},
	})
}

func TestPortRangesSplit(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
rules:
  - {name: a, src: tag:web, dst: tag:db, ports: ["100-200"], proto: tcp}
  - {name: b, src: tag:web, dst: tag:db, ports: ["150-300"], proto: tcp}
  - {name: c, action: deny, src: tag:web, dst: tag:db, ports: ["180-190", 250], proto: tcp}
`, tenant)
	np := c.Node("db")
	var got []string
	for _, e := range np.Rules {
		if e.Direction == policy.Ingress && e.Proto == tcp {
			got = append(got, policy.PortRange{Lo: e.PortLo, Hi: e.PortHi}.String()+" "+e.Verdict.String()+" "+np.RuleNames[e.RuleID])
		}
	}
	want := []string{"100-179 accept a", "180-190 deny c", "191-200 accept a", "201-249 accept b", "250 deny c", "251-300 accept b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("db's ingress tcp entries:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	checkFlows(t, c, []flow{
		{"web1", "db", tcp, 99, "deny"}, {"web1", "db", tcp, 100, "accept a"}, {"web1", "db", tcp, 185, "deny c"},
		{"web1", "db", tcp, 201, "accept b"}, {"web1", "db", tcp, 250, "deny c"}, {"web1", "db", tcp, 301, "deny"},
	})
}

func TestICMP(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
rules:
  - {name: ping-web, src: "*", dst: tag:web, proto: icmp}
  - {name: any-db, src: tag:admin, dst: tag:db}
  - {name: ssh-db, src: tag:web, dst: tag:db, ports: [22]}
`, tenant)
	checkFlows(t, c, []flow{
		{"admin", "web1", icmp, 0, "accept ping-web"},
		{"admin", "web1", icmp6, 0, "accept ping-web"}, // over IPv4 too: protocol numbers are not tied to families
		{"fd7a::1", "fd7a::2", icmp6, 0, "accept ping-web"},
		{"admin", "web1", tcp, 22, "deny"},
		{"admin", "db", icmp, 0, "accept any-db"},        // proto any with ports "*" covers ICMP
		{"web1", "db", icmp, 0, "deny"},                  // a rule with ports never does
		{"web1", "db", tcp, 22, "accept ssh-db"},         // proto any with ports: TCP
		{"web1", "db", udp, 22, "accept ssh-db"},         // and UDP
		{"admin", "db", 47, 0, "deny"},                   // other protocols are never accepted
		{"admin", "web1", icmp, 1234, "accept ping-web"}, // ICMP ignores the port
	})
	for _, e := range c.Node("web1").Rules {
		if (e.Proto == icmp || e.Proto == icmp6) && (e.PortLo != 0 || e.PortHi != 65535) {
			t.Errorf("ICMP entry %+v does not span 0..65535", e)
		}
	}
}

func TestIPv6AndFamilies(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
hosts:
  overlay6: fd7a::/64
rules:
  - {name: v6-web, src: host:overlay6, dst: tag:web, ports: [443], proto: tcp}
  - {name: v4-web, src: 100.64.0.0/10, dst: tag:web, ports: [80], proto: tcp}
`, tenant)
	checkFlows(t, c, []flow{
		{"admin", "v6only", tcp, 443, "accept v6-web"}, // admin and v6only share IPv6 only
		{"admin", "v6only", tcp, 80, "deny"},
		{"admin", "web1", tcp, 80, "accept v4-web"}, // both have IPv4: it is used
		{"admin", "web1", tcp, 443, "deny"},
		{"fd7a::1", "web1", tcp, 443, "accept v6-web"},
		{"fd7a::1", "web1", tcp, 80, "deny"},
		{"db", "v6only", tcp, 80, "deny"}, // no common family
		{"100.64.0.1", "fd7a::2", tcp, 80, "deny"},
	})
	// db has no IPv6 address: IPv6 is denied there, so IPv4 and IPv6 defaults
	// differ and the world prefixes carry them.
	var worlds []string
	for _, p := range c.Node("db").Prefixes {
		if p.Prefix.Bits() == 0 {
			worlds = append(worlds, p.Prefix.String())
		}
	}
	if len(worlds) > 1 {
		t.Errorf("db's world prefixes %v: at most one family has defaults", worlds)
	}
}

func TestRoutesAndHosts(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
hosts:
  office: 10.1.0.0/16
  printer: 10.1.7.7
rules:
  - {name: office-web, src: host:office, dst: tag:web, ports: [443]}
  - {name: admin-printer, src: tag:admin, dst: host:printer, ports: [631]}
  - {name: gw-ssh, src: tag:admin, dst: gw, ports: [22]}
`, tenant)
	checkFlows(t, c, []flow{
		{"10.1.2.3", "web1", tcp, 443, "accept office-web"},
		{"gw", "web1", tcp, 443, "deny"}, // tags and names select nodes, not their routes
		{"admin", "10.1.7.7", tcp, 631, "accept admin-printer"},
		{"admin", "10.1.7.8", tcp, 631, "deny"},
		{"admin", "gw", tcp, 22, "accept gw-ssh"},
		{"admin", "10.1.7.7", tcp, 22, "deny"},
		{"8.8.8.8", "9.9.9.9", tcp, 443, "deny"}, // nobody enforces: not in the overlay
	})
	if peers := c.Peers("gw"); !reflect.DeepEqual(peers, []string{"admin", "web1", "web2"}) {
		t.Errorf("gw's peers %v", peers)
	}
}

func TestGroupsAndNames(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
groups:
  admins: [tag:admin]
  everyone: [group:admins, web1, ghost]
rules:
  - {name: in, src: group:everyone, dst: db, ports: [5432], proto: tcp}
`, tenant)
	checkFlows(t, c, []flow{
		{"admin", "db", tcp, 5432, "accept in"},
		{"web1", "db", tcp, 5432, "accept in"},
		{"web2", "db", tcp, 5432, "deny"},
	})
	if peers := c.Peers("db"); !reflect.DeepEqual(peers, []string{"admin", "web1"}) {
		t.Errorf("db's peers %v", peers)
	}
	if peers := c.Peers("web2"); len(peers) != 0 {
		t.Errorf("web2's peers %v, want none", peers)
	}
}

// TestIdentitiesShared: nodes that every rule treats alike share an identity, and
// the rule entries of a node do not grow with the number of such nodes.
func TestIdentitiesShared(t *testing.T) {
	var nodes []policy.Node
	for i := range 200 {
		tag := []string{"web", "db"}[i%2]
		nodes = append(nodes, policy.Node{ID: "n" + string(rune('a'+i/26)) + string(rune('a'+i%26)), Tags: []string{tag},
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})}})
	}
	c := mustCompile(t, "tags: [web, db]\nrules:\n  - {src: tag:web, dst: tag:db, ports: [5432]}\n", nodes)
	np := c.Node(nodes[1].ID) // a db node
	ids := map[policy.Identity]int{}
	for _, p := range np.Prefixes {
		ids[p.Identity]++
	}
	if len(ids) != 1 || len(np.Prefixes) != 100 {
		t.Errorf("db node: %d prefixes over %d identities, want 100 web nodes over 1", len(np.Prefixes), len(ids))
	}
	if len(np.Rules) != 2 {
		t.Errorf("db node has %d entries, want 2 (tcp and udp 5432): %+v", len(np.Rules), np.Rules)
	}
}

// TestRuleIDsStable: a rule's id depends only on its name.
func TestRuleIDsStable(t *testing.T) {
	ids := func(doc string) map[string]uint32 {
		out := map[string]uint32{}
		c := mustCompile(t, doc, tenant)
		for _, n := range tenant {
			np := c.Node(n.ID)
			for id, name := range np.RuleNames {
				out[name] = id
			}
		}
		return out
	}
	a := ids("tags: [web, db]\nrules:\n  - {name: x, src: tag:web, dst: tag:db}\n  - {name: y, src: tag:db, dst: tag:web}\n")
	b := ids("tags: [web, db]\nrules:\n  - {name: new, src: \"*\", dst: tag:db, ports: [1]}\n  - {name: y, src: tag:db, dst: tag:web}\n  - {name: x, src: tag:web, dst: tag:db}\n")
	for _, name := range []string{"x", "y"} {
		if a[name] != b[name] || a[name] != policy.RuleID(name) {
			t.Errorf("rule %s: id %#x, then %#x, want %#x", name, a[name], b[name], policy.RuleID(name))
		}
	}
}

// TestDeterministic: the output does not depend on the order of the nodes.
func TestDeterministic(t *testing.T) {
	doc := `
tags: [web, db, admin]
hosts: {office: 10.1.0.0/16}
rules:
  - {src: [tag:admin, host:office], dst: [tag:web, tag:db], ports: [22, "8000-9000"]}
  - {action: deny, src: "*", dst: tag:db, ports: [8080]}
  - {src: "*", dst: "*", proto: icmp}
`
	var dumps []string
	r := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		nodes := slices.Clone(tenant)
		r.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
		var b bytes.Buffer
		if err := mustCompile(t, doc, nodes).Dump(&b); err != nil {
			t.Fatal(err)
		}
		dumps = append(dumps, b.String())
	}
	for _, d := range dumps[1:] {
		if d != dumps[0] {
			t.Fatalf("dumps differ with node order:\n%s\n---\n%s", dumps[0], d)
		}
	}
}

func TestUnknownNode(t *testing.T) {
	c := mustCompile(t, "rules:\n  - {src: \"*\", dst: \"*\"}\n", tenant)
	if c.Node("nope") != nil || c.Peers("nope") != nil {
		t.Error("an unknown node has a policy or peers")
	}
	if v, rule := c.Decide(policy.NodeEndpoint("nope"), policy.NodeEndpoint("web1"), tcp, 1); v != policy.Deny || rule != "" {
		t.Errorf("Decide from an unknown node: %v %q", v, rule)
	}
	if v, _ := c.Decide(policy.NodeEndpoint("admin"), policy.NodeEndpoint("web1"), tcp, 1); v != policy.Accept {
		t.Error("allow-all does not allow")
	}
	if peers := c.Peers("admin"); len(peers) != len(tenant)-1 {
		t.Errorf("allow-all: admin's peers %v", peers)
	}
}

func TestCompileNodeErrors(t *testing.T) {
	p, err := policy.Parse([]byte("rules: []"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nodes []policy.Node
		want  string
	}{
		{[]policy.Node{node("a", nil, "100.64.0.1"), node("a", nil, "100.64.0.2")}, `two nodes have ID "a"`},
		{[]policy.Node{node("a", nil, "100.64.0.1"), node("b", nil, "100.64.0.1")}, "nodes a and b both have address 100.64.0.1"},
		{[]policy.Node{{Name: "x"}}, `node "x" has no ID`},
		{[]policy.Node{{ID: "x", Addrs: []netip.Addr{{}}}}, "node x has an invalid address"},
	} {
		_, err := policy.Compile(p, tc.nodes)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "compiling policy") {
			t.Errorf("Compile(%v) = %v, want an error saying %q", tc.nodes, err, tc.want)
		}
	}
	if _, err := policy.Compile(nil, nil); err == nil {
		t.Error("Compile(nil) succeeded")
	}
	bad := &policy.Policy{Rules: []policy.Rule{{Name: "r", Ports: []policy.PortRange{policy.AllPorts},
		Src: []policy.Selector{{Kind: policy.SelectTag, Name: "undeclared"}}, Dst: []policy.Selector{{Kind: policy.SelectAll}}}}}
	var errs policy.Errors
	if _, err := policy.Compile(bad, nil); !errors.As(err, &errs) || !strings.Contains(err.Error(), `unknown tag "undeclared"`) {
		t.Errorf("Compile accepted an invalid policy: %v", err)
	}
}

// TestDocumentTests: tests run on every compile, with hypothetical nodes for tags.
func TestDocumentTests(t *testing.T) {
	base := `
tags: [web, db, admin, ops]
groups:
  staff: [tag:admin, tag:ops, ghost]
rules:
  - {name: staff-web, src: group:staff, dst: tag:web, ports: [22], proto: tcp}
  - {name: admin-db, src: tag:admin, dst: tag:db, ports: [22], proto: tcp}
tests:
`
	for _, tc := range []struct {
		test string
		fail string // "" when the test must pass
	}{
		{"{src: tag:admin, dst: tag:web, port: 22, expect: accept, rule: staff-web}", ""},
		{"{src: tag:ops, dst: tag:web, port: 22, expect: accept}", ""},
		{"{src: group:staff, dst: web1, port: 22, expect: accept}", ""},
		{"{src: ghost, dst: web2, port: 22, expect: accept}", ""}, // a name no node has: a hypothetical node
		{"{src: admin, dst: db, port: 22, expect: accept}", ""},
		{"{src: 100.64.0.1, dst: 100.64.0.4, port: 22, expect: accept}", ""},
		{"{src: tag:web, dst: tag:db, port: 22, expect: deny}", ""},
		{"{src: admin, dst: db, port: 22, proto: udp, expect: deny}", ""},
		{"{src: group:staff, dst: tag:db, port: 22, expect: accept}",
			`test failed: tag:ops (in group:staff) → tag:db tcp/22: denied (no rule accepts it), want accept`},
		{"{src: tag:admin, dst: tag:web, port: 22, expect: accept, rule: admin-db}",
			`test failed: tag:admin → tag:web tcp/22: accepted by rule "staff-web", want accept by rule "admin-db"`},
		{"{src: admin, dst: v6only, port: 22, proto: tcp, expect: accept}", ""}, // over IPv6
		{"{src: db, dst: v6only, port: 22, expect: deny}",
			"test failed: db → v6only tcp/22: the endpoints have no address family in common"},
	} {
		p, err := policy.Parse([]byte(base + "  - " + tc.test + "\n"))
		if err != nil {
			t.Fatalf("%s: %v", tc.test, err)
		}
		_, err = policy.Compile(p, tenant)
		var errs policy.Errors
		switch {
		case tc.fail == "" && err != nil:
			t.Errorf("%s: %v", tc.test, err)
		case tc.fail != "":
			if !errors.As(err, &errs) || !slices.Contains(errs, policy.Error{Line: 9, Column: 5, Path: "tests[0]", Msg: tc.fail}) {
				t.Errorf("%s: got %v\nwant 9:5: tests[0]: %s", tc.test, err, tc.fail)
			}
		}
	}
}

func TestCheckAdHoc(t *testing.T) {
	c := mustCompile(t, "tags: [web]\nrules:\n  - {name: w, src: tag:web, dst: tag:web, ports: [80]}\n", tenant)
	tag := policy.Selector{Kind: policy.SelectTag, Name: "web"}
	if err := c.Check([]policy.Test{{Src: tag, Dst: tag, Proto: policy.TCP, Port: 80, Expect: policy.Accept}}); err != nil {
		t.Error(err)
	}
	err := c.Check([]policy.Test{{Src: tag, Dst: policy.Selector{Kind: policy.SelectTag, Name: "nope"}, Proto: policy.TCP, Port: 80}})
	if err == nil || !strings.Contains(err.Error(), `unknown tag "nope"`) {
		t.Errorf("Check with an unknown tag: %v", err)
	}
}

// TestNodePolicyContract checks the invariants compiled.go promises on every node
// of the golden tenant.
func TestNodePolicyContract(t *testing.T) {
	c := mustCompile(t, `
tags: [web, db, admin]
hosts: {office: 10.1.0.0/16}
rules:
  - {src: [tag:admin, host:office], dst: [tag:web, tag:db], ports: [22, "8000-9000"]}
  - {action: deny, src: "*", dst: tag:db, ports: [8080]}
  - {src: "*", dst: "*", proto: icmp}
  - {src: tag:web, dst: "*", ports: [53], proto: udp}
`, tenant)
	for _, n := range tenant {
		np := c.Node(n.ID)
		for i, e := range np.Rules {
			if i > 0 {
				p := np.Rules[i-1]
				if p.Direction == e.Direction && p.Identity == e.Identity && p.Proto == e.Proto && p.PortHi >= e.PortLo {
					t.Errorf("%s: entries overlap or are unsorted: %+v, %+v", n.ID, p, e)
				}
			}
			if np.RuleNames[e.RuleID] == "" {
				t.Errorf("%s: no name for rule id %#x", n.ID, e.RuleID)
			}
			if e.Proto != tcp && e.Proto != udp && e.Proto != icmp && e.Proto != icmp6 {
				t.Errorf("%s: entry for protocol %d", n.ID, e.Proto)
			}
		}
		if !slices.IsSortedFunc(np.Prefixes, func(a, b policy.IdentityPrefix) int {
			if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
				return c
			}
			return a.Prefix.Bits() - b.Prefix.Bits()
		}) {
			t.Errorf("%s: prefixes not sorted", n.ID)
		}
	}
}
