package bpfpolicy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/policy"
)

func TestPortPrefixes(t *testing.T) {
	for _, tc := range []struct {
		lo, hi uint16
		want   []portPrefix
	}{
		{0, 65535, []portPrefix{{0, 0}}},
		{80, 80, []portPrefix{{80, 16}}},
		{0, 0, []portPrefix{{0, 16}}},
		{65535, 65535, []portPrefix{{65535, 16}}},
		{0, 1023, []portPrefix{{0, 6}}},
		{1024, 65535, []portPrefix{{1024, 6}, {2048, 5}, {4096, 4}, {8192, 3}, {16384, 2}, {32768, 1}}},
		{8000, 8080, []portPrefix{{8000, 10}, {8064, 12}, {8080, 16}}},
		{5, 4, nil},
	} {
		if got := portPrefixes(tc.lo, tc.hi); !slices.Equal(got, tc.want) {
			t.Errorf("portPrefixes(%d, %d) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
	if n := len(portPrefixes(1, 65534)); n != 30 {
		t.Errorf("1-65534 takes %d prefixes, want the worst case 30", n)
	}
}

// checkCover fails unless ps are aligned blocks that, in order, cover lo..hi exactly.
func checkCover(t *testing.T, lo, hi uint16, ps []portPrefix) {
	t.Helper()
	next := uint32(lo)
	for _, p := range ps {
		size := uint32(1) << (16 - p.Bits)
		if p.Bits > 16 || uint32(p.Value)%size != 0 {
			t.Fatalf("%d-%d: prefix %v is not an aligned block", lo, hi, p)
		}
		if uint32(p.Value) != next {
			t.Fatalf("%d-%d: prefix %v starts at %d, want %d (gap or overlap)", lo, hi, p, p.Value, next)
		}
		next += size
	}
	if next != uint32(hi)+1 {
		t.Fatalf("%d-%d: prefixes %v end at %d", lo, hi, ps, next-1)
	}
	if len(ps) > 30 {
		t.Fatalf("%d-%d: %d prefixes, more than 30", lo, hi, len(ps))
	}
}

// TestPortPrefixesCover is the property: for random ranges the prefixes cover exactly
// the range; for some, every port is also checked one by one against prefix matching.
func TestPortPrefixesCover(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		a, b := uint16(r.Uint32()), uint16(r.Uint32())
		if i%4 == 0 { // small ranges too
			b = a + uint16(r.IntN(300))
			if b < a {
				b = 65535
			}
		}
		lo, hi := min(a, b), max(a, b)
		ps := portPrefixes(lo, hi)
		checkCover(t, lo, hi, ps)
		if i < 50 {
			for port := range 65536 {
				n := 0
				for _, p := range ps {
					mask := uint16(0xffff << (16 - p.Bits))
					if p.Bits == 0 {
						mask = 0
					}
					if uint16(port)&mask == p.Value {
						n++
					}
				}
				want := 0
				if uint16(port) >= lo && uint16(port) <= hi {
					want = 1
				}
				if n != want {
					t.Fatalf("%d-%d: port %d matches %d prefixes, want %d", lo, hi, port, n, want)
				}
			}
		}
	}
}

func TestLowerRejects(t *testing.T) {
	pfx := func(s string, id policy.Identity) []policy.IdentityPrefix {
		return []policy.IdentityPrefix{{Prefix: netip.MustParsePrefix(s), Identity: id}}
	}
	rule := func(f func(*policy.RuleEntry)) []policy.RuleEntry {
		r := policy.RuleEntry{Direction: policy.Ingress, Identity: 1, Proto: policy.ProtoTCP, PortLo: 80, PortHi: 80, Verdict: policy.Accept, RuleID: 7}
		f(&r)
		return []policy.RuleEntry{r}
	}
	for _, tc := range []struct {
		name string
		p    policy.NodePolicy
		want string
	}{
		{"invalid prefix", policy.NodePolicy{Prefixes: []policy.IdentityPrefix{{Identity: 1}}}, "not valid"},
		{"mapped prefix", policy.NodePolicy{Prefixes: pfx("::ffff:10.0.0.0/104", 1)}, "IPv4-mapped"},
		{"any as a prefix identity", policy.NodePolicy{Prefixes: pfx("10.0.0.0/8", policy.IdentityAny)}, "names no remote"},
		{"two identities", policy.NodePolicy{Prefixes: append(pfx("10.0.0.0/8", 1), pfx("10.1.0.0/8", 2)...)}, "two identities"},
		{"direction", policy.NodePolicy{Rules: rule(func(r *policy.RuleEntry) { r.Direction = 2 })}, "unknown direction"},
		{"protocol", policy.NodePolicy{Rules: rule(func(r *policy.RuleEntry) { r.Proto = 47 })}, "unsupported protocol"},
		{"verdict", policy.NodePolicy{Rules: rule(func(r *policy.RuleEntry) { r.Verdict = 3 })}, "unknown verdict"},
		{"empty range", policy.NodePolicy{Rules: rule(func(r *policy.RuleEntry) { r.PortLo = 81 })}, "empty port range"},
		{"overlap", policy.NodePolicy{Rules: append(rule(func(r *policy.RuleEntry) { r.PortHi = 90 }),
			rule(func(r *policy.RuleEntry) { r.PortLo, r.PortHi, r.RuleID = 90, 100, 8 })...)}, "overlap"},
		{"too many rule ids", policy.NodePolicy{Rules: func() []policy.RuleEntry {
			var rs []policy.RuleEntry
			for i := range maxRuleIDs + 1 {
				rs = append(rs, policy.RuleEntry{Identity: policy.Identity(i), Proto: policy.ProtoUDP, PortLo: 1, PortHi: 1, RuleID: uint32(i)})
			}
			return rs
		}()}, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lower(&tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("lower: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLowerEntries(t *testing.T) {
	g, err := lower(testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if len(g.V4) != 3 || len(g.V6) != 3 || len(g.Hosts) != 0 {
		t.Errorf("%d IPv4, %d IPv6 and %d host prefixes, want 3, 3 and 0", len(g.V4), len(g.V6), len(g.Hosts))
	}
	hp := testPolicy()
	hp.Prefixes = append(hp.Prefixes,
		policy.IdentityPrefix{Prefix: netip.MustParsePrefix("10.1.0.1/32"), Identity: idDB},
		policy.IdentityPrefix{Prefix: netip.MustParsePrefix("fd00:1::1/128"), Identity: idDB})
	if g, err := lower(hp); err != nil || len(g.Hosts) != 2 || g.Hosts[0].Key.Family != 4 || g.Hosts[0].Key.Addr[0] != 10 || g.Hosts[1].Key.Family != 6 {
		t.Errorf("host prefixes lowered to %+v, %v", g.Hosts, err)
	}
	want := []uint32{ruleWeb, ruleWebAlt, ruleWebDeny, ruleDNS, rulePostgres, rulePingOut, ruleAdmin, ruleAdminDeny, rulePingWeb, ruleDBUDP}
	slices.Sort(want)
	if !slices.Equal(g.RuleIDs, want) {
		t.Errorf("rule ids %v, want %v", g.RuleIDs, want)
	}
	// web's ingress tcp ranges are one group, in port order, the deny in its place.
	var web *groupEntry
	for i, e := range g.Groups {
		if e.Key == (policyGroupKey{Identity: uint32(idWeb), Dir: uint8(policy.Ingress), Proto: protoTCP}) {
			web = &g.Groups[i]
		}
	}
	want4 := []policyPortRange{
		{Lo: 80, Hi: 80, RuleId: ruleWeb, Verdict: 1}, {Lo: 8000, Hi: 8049, RuleId: ruleWebAlt, Verdict: 1},
		{Lo: 8050, Hi: 8050, RuleId: ruleWebDeny, Verdict: 0}, {Lo: 8051, Hi: 8080, RuleId: ruleWebAlt, Verdict: 1},
	}
	if web == nil || web.Val.N != 4 || !slices.Equal(web.Val.R[:4], want4) {
		t.Errorf("web's tcp group: %+v, want %v", web, want4)
	}
	if len(g.Rules) != 0 {
		t.Errorf("%d trie entries for a policy whose groups fit the hash", len(g.Rules))
	}
}

// TestLowerLargeGroup: a group with more ranges than the hash value holds goes to the
// rule trie, as port prefixes, and its hash entry says so.
func TestLowerLargeGroup(t *testing.T) {
	p := &policy.NodePolicy{}
	for i := range groupRanges + 1 {
		p.Rules = append(p.Rules, policy.RuleEntry{Direction: policy.Egress, Identity: 7, Proto: protoUDP,
			PortLo: uint16(100 * i), PortHi: uint16(100*i + 3), Verdict: policy.Accept, RuleID: uint32(i + 1)})
	}
	p.Rules = append(p.Rules, policy.RuleEntry{Direction: policy.Egress, Identity: 7, Proto: protoTCP, PortLo: 22, PortHi: 22, Verdict: policy.Accept, RuleID: 99})
	g, err := lower(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Groups) != 2 || g.Groups[0].Val.N != 1 || g.Groups[1].Val.N != groupInTrie {
		t.Fatalf("groups %+v, want tcp in the hash and udp in the trie", g.Groups)
	}
	if len(g.Rules) != groupRanges+1 { // each 4-port range is one /14 prefix
		t.Errorf("%d trie entries, want %d", len(g.Rules), groupRanges+1)
	}
	for _, e := range g.Rules {
		if e.Key.Prefixlen != ruleKeyBits+14 || ntoh32(e.Key.Identity) != 7 || e.Key.Proto != protoUDP {
			t.Errorf("trie entry %+v", e.Key)
		}
	}
}

func TestLowerDigest(t *testing.T) {
	base, err := lower(testPolicy())
	if err != nil {
		t.Fatal(err)
	}
	same := testPolicy()
	slices.Reverse(same.Prefixes)
	slices.Reverse(same.Rules)
	same.Version = 99
	same.Prefixes = append(same.Prefixes, same.Prefixes[0]) // a repeated prefix changes nothing
	g, err := lower(same)
	if err != nil {
		t.Fatal(err)
	}
	if g.Digest != base.Digest {
		t.Error("reordering or versioning the same policy changed the digest")
	}
	for name, change := range map[string]func(*policy.NodePolicy){
		"identity": func(p *policy.NodePolicy) { p.Prefixes[0].Identity = 9 },
		"prefix":   func(p *policy.NodePolicy) { p.Prefixes[0].Prefix = netip.MustParsePrefix("10.9.0.0/16") },
		"port":     func(p *policy.NodePolicy) { p.Rules[0].PortHi = 81 },
		"verdict":  func(p *policy.NodePolicy) { p.Rules[0].Verdict = policy.Deny },
		"rule id":  func(p *policy.NodePolicy) { p.Rules[0].RuleID = 1 },
		"name":     func(p *policy.NodePolicy) { p.RuleNames[ruleWeb] = "renamed" },
	} {
		p := testPolicy()
		change(p)
		g, err := lower(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if g.Digest == base.Digest {
			t.Errorf("changing the %s left the digest unchanged", name)
		}
	}
	empty, err := lower(nil)
	if err != nil || len(empty.Rules)+len(empty.V4)+len(empty.V6) != 0 {
		t.Errorf("lower(nil) = %+v, %v; want no entries", empty, err)
	}
}
