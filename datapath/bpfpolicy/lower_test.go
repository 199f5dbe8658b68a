package bpfpolicy

import (
	"cmp"
	"encoding/binary"
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
	if g.Meta.Nlen4 != 2 || g.Meta.Nlen6 != 2 || len(g.V4)+len(g.V6) != 0 {
		t.Errorf("%d and %d hashed IPv4 and IPv6 lengths, %d trie prefixes; want 2, 2 and 0", g.Meta.Nlen4, g.Meta.Nlen6, len(g.V4)+len(g.V6))
	}
	if g.Meta.Len4 != [8]uint8{24, 16} || g.Meta.Len6 != [8]uint8{112, 64} {
		t.Errorf("hashed lengths %v and %v, want the longest first", g.Meta.Len4, g.Meta.Len6)
	}
	want := []uint32{ruleWeb, ruleWebAlt, ruleWebDeny, ruleDNS, rulePostgres, rulePingOut, ruleAdmin, ruleAdminDeny, rulePingWeb, ruleDBUDP}
	slices.Sort(want)
	if !slices.Equal(g.RuleIDs, want) {
		t.Errorf("rule ids %v, want %v", g.RuleIDs, want)
	}
	// Records in identity order: web, db, admin, any; the world has none.
	var ids []uint32
	for _, iv := range g.Idents[1:] {
		ids = append(ids, iv.Identity)
	}
	if !slices.Equal(ids, []uint32{uint32(idWeb), uint32(idDB), uint32(idAdmin), uint32(policy.IdentityAny)}) ||
		g.Meta.Any != 4 || g.Meta.World != 0 {
		t.Errorf("identity records %v, any %d, world %d", ids, g.Meta.Any, g.Meta.World)
	}
	// web's ingress tcp ranges are one group, in port order, the deny in its place.
	grp := g.Idents[1].Grp[policy.Ingress][protoIndex[protoTCP]]
	first, n := grp&0xffffff, grp>>24
	want4 := []policyPortRange{
		{Lo: 80, Hi: 80, RuleId: ruleWeb, Verdict: 1}, {Lo: 8000, Hi: 8049, RuleId: ruleWebAlt, Verdict: 1},
		{Lo: 8050, Hi: 8050, RuleId: ruleWebDeny, Verdict: 0}, {Lo: 8051, Hi: 8080, RuleId: ruleWebAlt, Verdict: 1},
	}
	if n != 4 || !slices.Equal(g.Ranges[first:first+n], want4) {
		t.Errorf("web's tcp group %#x: %+v, want %v", grp, g.Ranges[first:first+n], want4)
	}
	if g.Idents[1].Grp[policy.Egress] != [4]uint32{} {
		t.Errorf("web has egress groups %v, want none", g.Idents[1].Grp[policy.Egress])
	}
	if len(g.Rules) != 0 {
		t.Errorf("%d trie entries for a policy whose groups fit the range array", len(g.Rules))
	}
}

// TestLowerLargeGroup: a group with more ranges than the range array takes per group
// goes to the rule trie, as port prefixes, and its record says so.
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
	grp := g.Idents[1].Grp[policy.Egress]
	if len(g.Idents) != 2 || grp[protoIndex[protoTCP]] != 1<<24 || grp[protoIndex[protoUDP]] != groupInTrie<<24 {
		t.Fatalf("records %+v, want tcp in the range array and udp in the trie", g.Idents)
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

// identityIndexer returns the programs' identity lookup (pfx4_find, pfx6_find, trie_find in
// policy.c) on a lowered generation: the hashed lengths, longest first, each in its
// bucket; then the trie's longest match; then the world.
func (g *generation) identityIndexer() func(netip.Addr) uint32 {
	t4, t6 := map[netip.Prefix]uint32{}, map[netip.Prefix]uint32{}
	for _, e := range g.V4 {
		t4[netip.PrefixFrom(netip.AddrFrom4(e.Key.Addr), int(e.Key.Prefixlen))] = e.Index
	}
	for _, e := range g.V6 {
		t6[netip.PrefixFrom(netip.AddrFrom16(e.Key.Addr), int(e.Key.Prefixlen))] = e.Index
	}
	return func(a netip.Addr) uint32 { return g.identityIndex(a, t4, t6) }
}

func (g *generation) identityIndex(a netip.Addr, t4, t6 map[netip.Prefix]uint32) uint32 {
	if a.Is4() {
		b := a.As4()
		addr := binary.LittleEndian.Uint32(b[:])
		for i := range int(g.Meta.Nlen4) {
			l := uint64(g.Meta.Len4[i])
			m := uint64(addr & g.Meta.M4[i])
			k := uint32(((m<<8 | l) * g.Meta.Mul4) >> (g.Meta.Shift4 & 63))
			if i, ok := slices.BinarySearchFunc(g.Pfx4, k, func(e pfx4Entry, k uint32) int { return cmp.Compare(e.Bucket, k) }); ok {
				for _, v := range g.Pfx4[i].Val.S {
					if v&0xffffffffff == m|(l+1)<<32 {
						return uint32(v >> 40)
					}
				}
			}
		}
		return longest(t4, a, g.Meta.World)
	}
	b := a.As16()
	a0, a1 := binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
	for i := range int(g.Meta.Nlen6) {
		l := uint64(g.Meta.Len6[i])
		b0, b1 := a0&g.Meta.M6[i][0], a1&g.Meta.M6[i][1]
		k := uint32((b0*g.Meta.Mul6[0] + b1*g.Meta.Mul6[1] + l*g.Meta.Mul6[2]) >> (g.Meta.Shift6 & 63))
		if i, ok := slices.BinarySearchFunc(g.Pfx6, k, func(e pfx6Entry, k uint32) int { return cmp.Compare(e.Bucket, k) }); ok {
			for _, s := range g.Pfx6[i].Val.S {
				if s.A0 == b0 && s.A1 == b1 && s.Len1 == uint32(l+1) {
					return s.Index
				}
			}
		}
	}
	return longest(t6, a, g.Meta.World)
}

// longest returns the value of the longest prefix in m holding a, or none.
func longest(m map[netip.Prefix]uint32, a netip.Addr, none uint32) uint32 {
	for bits := a.BitLen(); bits >= 0 && len(m) > 0; bits-- {
		if v, ok := m[netip.PrefixFrom(a, bits).Masked()]; ok {
			return v
		}
	}
	return none
}

// TestLowerPrefixTables: the hash tables and tries find, for random addresses, the
// identity of the longest prefix holding them, also when there are more prefix
// lengths than the tables take (the shortest go to the trie) and more prefixes than
// a table holds (lengths move to the trie until the rest fit).
func TestLowerPrefixTables(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, tc := range []struct {
		name        string
		n, v6, lens int
	}{
		{"few", 50, 25, 3},
		{"many lengths", 400, 200, 40},
		{"lengths beyond the IPv4 table", pfx4Buckets + 1100, 0, 2},
		{"lengths beyond the IPv6 table", 100, pfx6Buckets + 600, 2},
		{"hosts beyond the IPv4 table", pfx4Buckets + 3000, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &policy.NodePolicy{}
			seen := map[netip.Prefix]bool{}
			add := func(pfx netip.Prefix) {
				if pfx = pfx.Masked(); !seen[pfx] {
					seen[pfx] = true
					p.Prefixes = append(p.Prefixes, policy.IdentityPrefix{Prefix: pfx, Identity: policy.Identity(1 + r.IntN(20))})
				}
			}
			for range tc.n {
				bits := 32
				if tc.lens > 2 {
					bits = 32 - r.IntN(min(tc.lens, 33))
				} else if tc.lens == 2 && r.IntN(10) == 0 {
					bits = 24
				}
				add(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(8)), byte(r.IntN(256)), byte(r.IntN(256))}), bits))
			}
			for range tc.v6 {
				bits := 128
				if tc.lens > 2 {
					bits = 128 - r.IntN(tc.lens)
				} else if tc.lens == 2 && r.IntN(10) == 0 {
					bits = 96
				}
				var a [16]byte
				a[0], a[1] = 0xfd, byte(r.IntN(4))
				for i := 8; i < 16; i++ {
					a[i] = byte(r.IntN(256))
				}
				add(netip.PrefixFrom(netip.AddrFrom16(a), bits))
			}
			// Every identity has rules, so that each has a record to tell apart.
			for id := 1; id <= 20; id++ {
				p.Rules = append(p.Rules, policy.RuleEntry{Direction: policy.Ingress, Identity: policy.Identity(id), Proto: protoTCP,
					PortLo: 1, PortHi: 1, Verdict: policy.Accept, RuleID: uint32(id)})
			}
			g, err := lower(p)
			if err != nil {
				t.Fatal(err)
			}
			identityIndex := g.identityIndexer()
			index := map[policy.Identity]uint32{}
			for i, iv := range g.Idents {
				index[policy.Identity(iv.Identity)] = uint32(i)
			}
			naive := map[netip.Prefix]uint32{} // the reference: longest prefix, by brute force
			for _, ip := range p.Prefixes {
				naive[ip.Prefix] = index[ip.Identity]
			}
			check := func(a netip.Addr) {
				if got, want := identityIndex(a), longest(naive, a, 0); got != want {
					t.Fatalf("%v: identity index %d, want %d", a, got, want)
				}
			}
			for _, ip := range p.Prefixes {
				check(ip.Prefix.Addr()) // the first address of each prefix
			}
			for range 2000 {
				if r.IntN(2) == 0 {
					check(netip.AddrFrom4([4]byte{10, byte(r.IntN(8)), byte(r.IntN(256)), byte(r.IntN(256))}))
				} else {
					var a [16]byte
					a[0], a[1] = 0xfd, byte(r.IntN(4))
					for i := 8; i < 16; i++ {
						a[i] = byte(r.IntN(256))
					}
					check(netip.AddrFrom16(a))
				}
			}
			t.Logf("IPv4: %d lengths hashed in %d buckets, %d in the trie; IPv6: %d lengths hashed in %d buckets, %d in the trie",
				g.Meta.Nlen4, len(g.Pfx4), len(g.V4), g.Meta.Nlen6, len(g.Pfx6), len(g.V6))
			if tc.name == "hosts beyond the IPv4 table" && (g.Meta.Nlen4 != 0 || len(g.V4) != len(seen)) {
				t.Errorf("%d prefixes, more than the table holds: %d lengths hashed, %d in the trie; want all in the trie", len(seen), g.Meta.Nlen4, len(g.V4))
			}
		})
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
	if err != nil || len(empty.Rules)+len(empty.V4)+len(empty.V6)+len(empty.Pfx4)+len(empty.Pfx6)+len(empty.Ranges) != 0 || len(empty.Idents) != 1 {
		t.Errorf("lower(nil) = %+v, %v; want no entries", empty, err)
	}
}
