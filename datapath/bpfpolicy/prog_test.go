package bpfpolicy

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cvlan/cvlan/internal/privileged"
	"github.com/cvlan/cvlan/policy"
)

// TC verdicts.
const (
	actOK   = 0
	actShot = 2
)

// loaded loads the programs with unpinned maps and Ethernet framing (what
// BPF_PROG_TEST_RUN feeds sched_cls programs), sets p unless it is nil, and closes
// everything when the test ends. tweak may change the spec first.
func loaded(t testing.TB, p *policy.NodePolicy, tweak func(*ebpf.CollectionSpec)) *Enforcer {
	t.Helper()
	privileged.Require(t)
	spec, err := loadSpec(true)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(spec)
	}
	e, err := load(spec, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	if p != nil {
		if err := e.Set(p); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}
	return e
}

func (e *Enforcer) prog(dir policy.Direction) *ebpf.Program {
	if dir == policy.Egress {
		return e.objs.CvlanEgress
	}
	return e.objs.CvlanIngress
}

func run(t testing.TB, e *Enforcer, dir policy.Direction, pkt []byte) uint32 {
	t.Helper()
	ret, err := e.prog(dir).Run(&ebpf.RunOptions{Data: pkt})
	if err != nil {
		t.Fatalf("running %s program: %v", dir, err)
	}
	return ret
}

// counts is every counter of an Enforcer at one moment.
type counts struct {
	reasons map[string]uint64 // "drop:<reason>", "pass:<reason>"
	rules   map[uint32]RuleCounter
}

func snapshot(t testing.TB, e *Enforcer) counts {
	t.Helper()
	c := counts{reasons: map[string]uint64{}}
	drops, err := e.Drops()
	if err != nil {
		t.Fatal(err)
	}
	passes, err := e.Passes()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range drops {
		c.reasons["drop:"+k] = v
	}
	for k, v := range passes {
		c.reasons["pass:"+k] = v
	}
	if c.rules, err = e.Counters(); err != nil {
		t.Fatal(err)
	}
	return c
}

// step is one packet through one program, with the verdict and counters it must
// leave: want names the one reason counter it bumps ("pass:rule", "drop:no_rule"),
// rule the one rule counter (0: none).
type step struct {
	dir  policy.Direction
	pkt  []byte
	want string
	rule uint32
}

// check runs s and checks the verdict and that exactly the expected counters moved,
// by one packet and len(pkt) bytes.
func (s step) check(t testing.TB, e *Enforcer) {
	t.Helper()
	before := snapshot(t, e)
	got := run(t, e, s.dir, s.pkt)
	after := snapshot(t, e)
	want := uint32(actShot)
	if strings.HasPrefix(s.want, "pass:") {
		want = actOK
	}
	if got != want {
		t.Errorf("%s packet: verdict %d, want %d (%s)", s.dir, got, want, s.want)
	}
	var moved []string
	for k, v := range after.reasons {
		if d := v - before.reasons[k]; d != 0 {
			moved = append(moved, fmt.Sprintf("%s+%d", k, d))
		}
	}
	if len(moved) != 1 || moved[0] != s.want+"+1" {
		t.Errorf("%s packet: reason counters moved %v, want [%s+1]", s.dir, moved, s.want)
	}
	for id, c := range after.rules {
		b := before.rules[id]
		d := RuleCounter{c.Packets - b.Packets, c.Bytes - b.Bytes}
		wantD := RuleCounter{}
		if id == s.rule {
			wantD = RuleCounter{1, uint64(len(s.pkt))}
		}
		if d != wantD {
			t.Errorf("%s packet: rule %d counter moved %+v, want %+v", s.dir, id, d, wantD)
		}
	}
	if _, ok := after.rules[s.rule]; s.rule != 0 && !ok {
		t.Errorf("%s packet: rule %d has no counter", s.dir, s.rule)
	}
}

// Test identities and rule ids.
const (
	idWeb   policy.Identity = 1
	idDB    policy.Identity = 2
	idAdmin policy.Identity = 3

	ruleWeb       = 100 // ingress web tcp 80
	ruleWebAlt    = 101 // ingress web tcp 8000-8080, but 8050
	ruleWebDeny   = 102 // ingress web tcp 8050 deny
	ruleDNS       = 103 // ingress any udp 53
	rulePostgres  = 104 // egress db tcp 5432
	rulePingOut   = 105 // egress any icmp, icmpv6
	ruleAdmin     = 106 // ingress admin udp 1000-2000, but 1500
	ruleAdminDeny = 107 // ingress admin udp 1500 deny
	rulePingWeb   = 108 // ingress web icmp, icmpv6
	ruleDBUDP     = 109 // egress db udp 5000-5100
)

// testPolicy is what the compiler could make of a small policy: admin's prefix lies
// inside web's, deny rules are resolved into split ranges, and the IdentityAny
// entries are merged into every identity that has entries of its own.
func testPolicy() *policy.NodePolicy {
	pfx := func(s string, id policy.Identity) policy.IdentityPrefix {
		return policy.IdentityPrefix{Prefix: netip.MustParsePrefix(s), Identity: id}
	}
	in, out := policy.Ingress, policy.Egress
	accept, deny := policy.Accept, policy.Deny
	r := func(dir policy.Direction, id policy.Identity, proto uint8, lo, hi uint16, v policy.Verdict, rule uint32) policy.RuleEntry {
		return policy.RuleEntry{Direction: dir, Identity: id, Proto: proto, PortLo: lo, PortHi: hi, Verdict: v, RuleID: rule}
	}
	any := policy.IdentityAny
	return &policy.NodePolicy{
		Version: 1,
		Prefixes: []policy.IdentityPrefix{
			pfx("10.1.0.0/16", idWeb), pfx("fd00:1::/64", idWeb),
			pfx("10.2.0.0/16", idDB), pfx("fd00:2::/64", idDB),
			pfx("10.1.5.0/24", idAdmin), pfx("fd00:1::5:0/112", idAdmin),
		},
		Rules: []policy.RuleEntry{
			r(in, idWeb, protoTCP, 80, 80, accept, ruleWeb),
			r(in, idWeb, protoTCP, 8000, 8049, accept, ruleWebAlt),
			r(in, idWeb, protoTCP, 8050, 8050, deny, ruleWebDeny),
			r(in, idWeb, protoTCP, 8051, 8080, accept, ruleWebAlt),
			r(in, idWeb, protoICMP, 0, 65535, accept, rulePingWeb),
			r(in, idWeb, protoICMPv6, 0, 65535, accept, rulePingWeb),
			r(in, idWeb, protoUDP, 53, 53, accept, ruleDNS),
			r(in, any, protoUDP, 53, 53, accept, ruleDNS),
			r(in, idAdmin, protoUDP, 53, 53, accept, ruleDNS),
			r(in, idAdmin, protoUDP, 1000, 1499, accept, ruleAdmin),
			r(in, idAdmin, protoUDP, 1500, 1500, deny, ruleAdminDeny),
			r(in, idAdmin, protoUDP, 1501, 2000, accept, ruleAdmin),
			r(out, idDB, protoTCP, 5432, 5432, accept, rulePostgres),
			r(out, idDB, protoUDP, 5000, 5100, accept, ruleDBUDP),
			r(out, idDB, protoICMP, 0, 65535, accept, rulePingOut),
			r(out, idDB, protoICMPv6, 0, 65535, accept, rulePingOut),
			r(out, any, protoICMP, 0, 65535, accept, rulePingOut),
			r(out, any, protoICMPv6, 0, 65535, accept, rulePingOut),
		},
		RuleNames: map[uint32]string{
			ruleWeb: "web", ruleWebAlt: "web-alt", ruleWebDeny: "web-deny", ruleDNS: "dns",
			rulePostgres: "postgres", rulePingOut: "ping-out", ruleAdmin: "admin",
			ruleAdminDeny: "admin-deny", rulePingWeb: "ping-web", ruleDBUDP: "db-udp",
		},
	}
}

// Addresses: the node itself, and remotes of each identity.
const (
	local4, local6 = "10.0.0.1", "fd00::1"
	web4, web6     = "10.1.0.7", "fd00:1::7"
	admin4, admin6 = "10.1.5.9", "fd00:1::5:9"
	db4, db6       = "10.2.0.5", "fd00:2::5"
	world4, world6 = "192.0.2.9", "2001:db8::9"
)

var in, out = policy.Ingress, policy.Egress

func TestVerdicts(t *testing.T) {
	e := loaded(t, testPolicy(), nil)
	for _, tc := range verdictCases() {
		t.Run(tc.name, func(t *testing.T) {
			forget(t, e)
			for i, s := range tc.steps {
				t.Run(fmt.Sprint(i), func(t *testing.T) { s.check(t, e) })
			}
		})
	}
}

// forget empties the conntrack and fragment maps, so that a case starts with no flows,
// and the flow cache, which would otherwise vouch for the deleted flows for a while.
func forget(t testing.TB, e *Enforcer) {
	t.Helper()
	clearMap[policyCtKey, policyCtVal](t, e.objs.Conntrack)
	clearMap[policyFragKey, policyFragVal](t, e.objs.Frags)
	n := int(e.objs.FlowCache.MaxEntries())
	if _, err := e.objs.FlowCache.BatchUpdate(indexes(n), make([]policyFlowSlot, n), nil); err != nil {
		t.Fatalf("clearing the flow cache: %v", err)
	}
}

func clearMap[K, V any](t testing.TB, m *ebpf.Map) {
	t.Helper()
	var keys []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("listing %s: %v", m, err)
	}
	for _, k := range keys {
		if err := m.Delete(&k); err != nil {
			t.Fatalf("deleting from %s: %v", m, err)
		}
	}
}

type verdictCase struct {
	name  string
	steps []step
}

func verdictCases() []verdictCase {
	var cases []verdictCase
	add := func(name string, steps ...step) { cases = append(cases, verdictCase{name, steps}) }
	for _, fam := range []struct {
		name                            string
		v6                              bool
		local, web, admin, db, world    string
		icmp, echoReq, echoRep, unreach uint8
	}{
		{"v4", false, local4, web4, admin4, db4, world4, protoICMP, icmpEchoRequest, icmpEchoReply, icmpUnreachable},
		{"v6", true, local6, web6, admin6, db6, world6, protoICMPv6, icmp6EchoRequest, icmp6EchoReply, icmp6Unreachable},
	} {
		n := func(s string) string { return fam.name + "/" + s }
		l, web, admin, db, world := fam.local, fam.web, fam.admin, fam.db, fam.world
		tcpIn := func(src string, dport uint16) []byte { return ip(src, l, protoTCP, tcp(40000, dport, 0)) }
		udpIn := func(src string, dport uint16) []byte { return ip(src, l, protoUDP, udp(40000, dport, 10)) }

		add(n("tcp accept"), step{in, tcpIn(web, 80), "pass:rule", ruleWeb})
		add(n("tcp no rule"), step{in, tcpIn(web, 81), "drop:no_rule", 0})
		add(n("tcp payload bytes counted"), step{in, ip(web, l, protoTCP, tcp(40000, 80, 1000)), "pass:rule", ruleWeb})
		add(n("port range edges"),
			step{in, tcpIn(web, 7999), "drop:no_rule", 0},
			step{in, tcpIn(web, 8000), "pass:rule", ruleWebAlt},
			step{in, tcpIn(web, 8049), "pass:rule", ruleWebAlt},
			step{in, tcpIn(web, 8051), "pass:rule", ruleWebAlt},
			step{in, tcpIn(web, 8080), "pass:rule", ruleWebAlt},
			step{in, tcpIn(web, 8081), "drop:no_rule", 0})
		add(n("deny overrides accept"),
			step{in, tcpIn(web, 8050), "drop:deny_rule", ruleWebDeny},
			step{in, udpIn(admin, 1500), "drop:deny_rule", ruleAdminDeny},
			step{in, udpIn(admin, 1499), "pass:rule", ruleAdmin},
			step{in, udpIn(admin, 1501), "pass:rule", ruleAdmin})
		add(n("longest prefix decides identity"),
			step{in, tcpIn(admin, 80), "drop:no_rule", 0},
			step{in, udpIn(admin, 1000), "pass:rule", ruleAdmin},
			step{in, udpIn(admin, 2000), "pass:rule", ruleAdmin},
			step{in, udpIn(admin, 2001), "drop:no_rule", 0},
			step{in, udpIn(web, 1000), "drop:no_rule", 0})
		add(n("identity any fallback"),
			step{in, udpIn(db, 53), "pass:rule", ruleDNS},
			step{in, udpIn(db, 54), "drop:no_rule", 0},
			step{in, ip(db, l, protoTCP, tcp(40000, 53, 0)), "drop:no_rule", 0})
		add(n("unknown remote is world"),
			step{in, udpIn(world, 53), "pass:rule", ruleDNS},
			step{in, tcpIn(world, 80), "drop:no_rule", 0},
			step{in, ip(world, l, fam.icmp, icmp(fam.echoReq, 0, 7, nil)), "drop:no_rule", 0})
		add(n("direction: egress judges the destination"),
			step{out, ip(l, db, protoTCP, tcp(40000, 5432, 0)), "pass:rule", rulePostgres},
			step{out, ip(l, web, protoTCP, tcp(40000, 5432, 0)), "drop:no_rule", 0},
			step{in, ip(db, l, protoTCP, tcp(40000, 5432, 0)), "drop:no_rule", 0})
		add(n("icmp"),
			step{out, ip(l, world, fam.icmp, icmp(fam.echoReq, 0, 7, nil)), "pass:rule", rulePingOut},
			step{in, ip(web, l, fam.icmp, icmp(fam.echoReq, 0, 7, nil)), "pass:rule", rulePingWeb},
			step{in, ip(db, l, fam.icmp, icmp(fam.echoReq, 0, 7, nil)), "drop:no_rule", 0})
		add(n("tcp reply of an egress flow"),
			step{out, ip(l, db, protoTCP, tcp(40001, 5432, 0)), "pass:rule", rulePostgres},
			step{in, ip(db, l, protoTCP, tcp(5432, 40001, 0)), "pass:reply", 0},
			step{in, ip(db, l, protoTCP, tcp(5432, 40001, 100)), "pass:reply", 0},
			// the same reversed tuple through the direction that opened the flow
			step{out, ip(db, l, protoTCP, tcp(5432, 40001, 0)), "drop:no_rule", 0},
			// other ports of the same hosts
			step{in, ip(db, l, protoTCP, tcp(5432, 40002, 0)), "drop:no_rule", 0},
			step{in, ip(db, l, protoTCP, tcp(5433, 40001, 0)), "drop:no_rule", 0})
		add(n("unsolicited reply"),
			step{in, ip(db, l, protoTCP, tcp(5432, 40001, 0)), "drop:no_rule", 0})
		add(n("reply of an ingress flow"),
			step{in, ip(web, l, protoTCP, tcp(5555, 80, 0)), "pass:rule", ruleWeb},
			step{out, ip(l, web, protoTCP, tcp(80, 5555, 0)), "pass:reply", 0},
			step{in, ip(web, l, protoTCP, tcp(5555, 80, 0)), "pass:rule", ruleWeb})
		add(n("udp reply"),
			step{out, ip(l, db, protoUDP, udp(40000, 5000, 10)), "pass:rule", ruleDBUDP},
			step{in, ip(db, l, protoUDP, udp(5000, 40000, 10)), "pass:reply", 0},
			step{in, ip(db, l, protoUDP, udp(5000, 40001, 10)), "drop:no_rule", 0})
		add(n("echo reply"),
			step{out, ip(l, world, fam.icmp, icmp(fam.echoReq, 0, 77, nil)), "pass:rule", rulePingOut},
			step{in, ip(world, l, fam.icmp, icmp(fam.echoRep, 0, 77, nil)), "pass:reply", 0},
			step{in, ip(world, l, fam.icmp, icmp(fam.echoRep, 0, 78, nil)), "drop:no_rule", 0})

		flow := ip(l, db, protoUDP, udp(40000, 5000, 10))
		other := ip(l, db, protoUDP, udp(40000, 5001, 10))
		inFlow := ip(db, l, protoUDP, udp(3333, 53, 10))
		add(n("icmp error related to a flow"),
			step{out, flow, "pass:rule", ruleDBUDP},
			step{in, ip(db, l, fam.icmp, icmpError(fam.v6, flow)), "pass:related", 0},
			step{in, ip(world, l, fam.icmp, icmpError(fam.v6, flow)), "pass:related", 0},
			// about a packet the node never sent
			step{in, ip(db, l, fam.icmp, icmpError(fam.v6, other)), "drop:no_rule", 0},
			// travelling the way the quoted packet went: not an answer to it
			step{out, ip(l, db, fam.icmp, icmpError(fam.v6, flow)), "pass:rule", rulePingOut},
			// about the flow's reply
			step{out, ip(l, db, fam.icmp, icmpError(fam.v6, ip(db, l, protoUDP, udp(5000, 40000, 1)))), "pass:related", 0})
		add(n("icmp error related to an ingress flow"),
			step{in, inFlow, "pass:rule", ruleDNS},
			step{out, ip(l, db, fam.icmp, icmpError(fam.v6, inFlow)), "pass:related", 0})
		add(n("icmp error without a flow"),
			step{in, ip(db, l, fam.icmp, icmpError(fam.v6, flow)), "drop:no_rule", 0})
	}
	return append(cases, fragmentCases()...)
}
