package bpfpolicy

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/cvlan/cvlan/policy"
)

// This file lowers a policy.NodePolicy into map entries. It is pure: no kernel, no
// file descriptors; the loader writes what it returns.

// portPrefix is a block of the 16-bit port space: the ports whose top Bits bits equal
// those of Value (the other bits of Value are zero).
type portPrefix struct {
	Value uint16
	Bits  uint8
}

// portPrefixes decomposes the inclusive range lo..hi into the fewest prefixes that
// cover it exactly (at most 30). It returns nil if lo > hi.
func portPrefixes(lo, hi uint16) []portPrefix {
	var out []portPrefix
	for l, h := uint32(lo), uint32(hi); l <= h; {
		// The largest aligned block that starts at l and ends at or before h.
		k := 16
		if l != 0 {
			k = bits.TrailingZeros32(l)
		}
		for l+(1<<k)-1 > h {
			k--
		}
		out = append(out, portPrefix{Value: uint16(l), Bits: uint8(16 - k)})
		l += 1 << k
	}
	return out
}

// The sizes of policy.h's maps and tables (enum sizes).
const (
	maxRuleIDs  = int(policySizesMAX_RULES)    // rule ids, and counter slots
	pfx4Buckets = int(policySizesPFX4BUCKETS)  // IPv4 prefix hash table
	pfx6Buckets = int(policySizesPFX6BUCKETS)  // IPv6 prefix hash table
	pfxBucket   = int(policySizesPFX_BUCKET)   // prefixes a bucket holds
	pfxLens     = int(policySizesPFX_LENS)     // hashed prefix lengths per family
	maxIdents   = int(policySizesMAX_IDENTS)   // identity records, index 0 included
	maxRanges   = int(policySizesMAX_RANGES)   // port ranges outside the rule trie
	groupRanges = int(policySizesGROUP_RANGES) // ranges a group may have outside the trie
	groupInTrie = uint32(policySizesGROUP_IN_TRIE)
)

// pfxMinBuckets is the fewest buckets a family's hash table uses.
const pfxMinBuckets = 8

// ruleKeyBits is the length of a rule key's identity, direction and protocol, the
// bits before the port prefix.
const ruleKeyBits = 32 + 8 + 8

// protoIndex is a protocol's place in ident_val.grp (proto_index in policy.c).
var protoIndex = map[uint8]int{policy.ProtoTCP: 0, policy.ProtoUDP: 1, policy.ProtoICMP: 2, policy.ProtoICMPv6: 3}

// pfx4Entry and pfx6Entry are occupied buckets of the prefix hash tables; v4Entry
// and v6Entry entries of the identity tries; ruleEntry an entry of the rule trie.
type pfx4Entry struct {
	Bucket uint32
	Val    policyPfx4Bucket // per prefix: addr | (len+1) << 32 | index << 40
}

type pfx6Entry struct {
	Bucket uint32
	Val    policyPfx6Bucket
}

type v4Entry struct {
	Key   policyLpm4Key
	Index uint32
}

type v6Entry struct {
	Key   policyLpm6Key
	Index uint32
}

type ruleEntry struct {
	Key policyRuleKey
	Val policyRuleVal
}

// generation is what one policy puts into the maps of one generation slot, plus the
// digest that tells whether two policies load the same thing.
type generation struct {
	Meta   policyGenMeta
	Pfx4   []pfx4Entry
	Pfx6   []pfx6Entry
	V4     []v4Entry // prefixes of the lengths the hash table does not hold
	V6     []v6Entry
	Idents []policyIdentVal  // by identity index; [0] is the record of no entries
	Ranges []policyPortRange // the groups' ranges; Slot is set by the loader
	Rules  []ruleEntry       // the entries of groups in the rule trie; Slot likewise

	RuleIDs []uint32 // each id of Ranges and Rules once, ascending
	Names   map[uint32]string
	Version int64
	Digest  [sha256.Size]byte
}

// identityPrefix is one remote prefix with the index of its identity's record.
type identityPrefix struct {
	Prefix netip.Prefix
	Index  uint32
}

// lower turns a compiled policy into map entries. nil is the zero policy (deny
// everything). It rejects what the compiler's contract rules out, so that a broken
// policy is never half-written: prefixes that are invalid, IPv4-mapped or name
// IdentityAny, one prefix with two identities, unknown directions, protocols or
// verdicts, empty or overlapping port ranges of one (direction, identity, protocol),
// more than maxRuleIDs rule ids or more identities with entries than maxIdents-1.
func lower(p *policy.NodePolicy) (*generation, error) {
	if p == nil {
		p = &policy.NodePolicy{}
	}
	g := &generation{Version: p.Version, Names: p.RuleNames}
	seen := map[netip.Prefix]policy.Identity{}
	var prefixes []policy.IdentityPrefix
	for _, ip := range p.Prefixes {
		pfx := ip.Prefix
		switch {
		case !pfx.IsValid():
			return nil, fmt.Errorf("prefix %v of identity %d is not valid", pfx, ip.Identity)
		case pfx.Addr().Is4In6():
			return nil, fmt.Errorf("prefix %v of identity %d: write IPv4-mapped prefixes as IPv4", pfx, ip.Identity)
		case ip.Identity == policy.IdentityAny:
			return nil, fmt.Errorf("prefix %v: identity %#x (any) names no remote", pfx, uint32(ip.Identity))
		}
		pfx = pfx.Masked()
		if old, ok := seen[pfx]; ok {
			if old != ip.Identity {
				return nil, fmt.Errorf("prefix %v has two identities, %d and %d", pfx, old, ip.Identity)
			}
			continue
		}
		seen[pfx] = ip.Identity
		prefixes = append(prefixes, policy.IdentityPrefix{Prefix: pfx, Identity: ip.Identity})
	}
	slices.SortFunc(prefixes, func(a, b policy.IdentityPrefix) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})

	groups, err := checkRules(p.Rules)
	if err != nil {
		return nil, err
	}
	keys := make([]group, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b group) int {
		return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.dir, b.dir), cmp.Compare(a.proto, b.proto))
	})
	g.Digest = digest(prefixes, keys, groups, g.Names)

	// Identity records, in identity order (so IdentityWorld first, IdentityAny last).
	index := map[policy.Identity]uint32{}
	g.Idents = []policyIdentVal{{}}
	ids := map[uint32]bool{}
	for _, k := range keys {
		i, ok := index[k.id]
		if !ok {
			if len(g.Idents) == maxIdents {
				return nil, fmt.Errorf("the policy has rule entries for more than %d identities", maxIdents-1)
			}
			i = uint32(len(g.Idents))
			index[k.id] = i
			g.Idents = append(g.Idents, policyIdentVal{Identity: uint32(k.id)})
		}
		rs := groups[k]
		grp := &g.Idents[i].Grp[k.dir][protoIndex[k.proto]]
		if len(rs) <= groupRanges && len(g.Ranges)+len(rs) <= maxRanges {
			*grp = uint32(len(g.Ranges)) | uint32(len(rs))<<24
			for _, r := range rs {
				ids[r.RuleID] = true
				g.Ranges = append(g.Ranges, policyPortRange{Lo: r.PortLo, Hi: r.PortHi, RuleId: r.RuleID, Verdict: uint8(r.Verdict)})
			}
			continue
		}
		*grp = groupInTrie << 24
		for _, r := range rs {
			ids[r.RuleID] = true
			for _, pp := range portPrefixes(r.PortLo, r.PortHi) {
				g.Rules = append(g.Rules, ruleEntry{
					Key: ruleKey(r.Direction, r.Identity, r.Proto, pp),
					Val: policyRuleVal{RuleId: r.RuleID, Verdict: uint8(r.Verdict)},
				})
			}
		}
	}
	g.Meta.World = index[policy.IdentityWorld]
	g.Meta.Any = index[policy.IdentityAny]
	slices.SortFunc(g.Rules, func(a, b ruleEntry) int { return compareRuleKeys(a.Key, b.Key) })
	for id := range ids {
		g.RuleIDs = append(g.RuleIDs, id)
	}
	slices.Sort(g.RuleIDs)
	if len(g.RuleIDs) > maxRuleIDs {
		return nil, fmt.Errorf("the policy uses %d rule ids, more than the %d the counters hold", len(g.RuleIDs), maxRuleIDs)
	}

	var v4, v6 []identityPrefix
	for _, ip := range prefixes {
		e := identityPrefix{ip.Prefix, index[ip.Identity]} // 0 if the identity has no entries
		if ip.Prefix.Addr().Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	g.hashV4(v4)
	g.hashV6(v6)
	return g, nil
}

// hashPlan picks the prefix lengths of one family that go into its hash table: the
// longest ones, at most pfxLens of them, at most one prefix per bucket on average.
// It returns the lengths, longest first, and the prefixes by length.
func hashPlan(ps []identityPrefix, buckets int) (lens []int, byLen map[int][]identityPrefix) {
	byLen = map[int][]identityPrefix{}
	for _, p := range ps {
		byLen[p.Prefix.Bits()] = append(byLen[p.Prefix.Bits()], p)
	}
	var all []int
	for l := range byLen {
		all = append(all, l)
	}
	slices.SortFunc(all, func(a, b int) int { return cmp.Compare(b, a) })
	n := 0
	for _, l := range all {
		if len(lens) == pfxLens || n+len(byLen[l]) > buckets {
			break
		}
		n += len(byLen[l])
		lens = append(lens, l)
	}
	return lens, byLen
}

// tableSize is the number of buckets a table of n prefixes uses: a power of two, at
// least n, at most capacity.
func tableSize(n, capacity int) int {
	s := pfxMinBuckets
	for s < n && s < capacity {
		s *= 2
	}
	return s
}

// place puts n keys into buckets, each into its home bucket. It returns each key's
// place in its bucket, or false if a bucket would overflow.
func place(n, buckets int, home func(i int) uint32) ([]uint32, []int, bool) {
	fill := make([]int, buckets)
	at, pos := make([]uint32, n), make([]int, n)
	for i := range n {
		h := home(i)
		if fill[h] == pfxBucket {
			return nil, nil, false
		}
		at[i], pos[i] = h, fill[h]
		fill[h]++
	}
	return at, pos, true
}

// seedAttempts is how many hash multipliers the loader tries before it gives up a
// prefix length to the trie.
const seedAttempts = 32

func oddMultiplier(r *rand.Rand) uint64 { return r.Uint64() | 1 }

// hashV4 lays out the IPv4 prefixes: the hashed lengths into the table (Meta and
// Pfx4), the others into the trie (V4).
func (g *generation) hashV4(ps []identityPrefix) {
	lens, byLen := hashPlan(ps, pfx4Buckets)
	r := rand.New(rand.NewPCG(4, 4))
	raw := func(p netip.Prefix) uint64 {
		a := p.Addr().As4()
		return uint64(binary.LittleEndian.Uint32(a[:]))
	}
	for ; len(lens) > 0; lens = lens[:len(lens)-1] {
		var keys []identityPrefix
		for _, l := range lens {
			keys = append(keys, byLen[l]...)
		}
		buckets := tableSize(len(keys), pfx4Buckets)
		shift := 64 - bits.TrailingZeros(uint(buckets))
		placed := false
		for range seedAttempts {
			mul := oddMultiplier(r)
			at, pos, ok := place(len(keys), buckets, func(i int) uint32 {
				return uint32(((raw(keys[i].Prefix)<<8 | uint64(keys[i].Prefix.Bits())) * mul) >> shift)
			})
			if !ok {
				continue
			}
			g.Meta.Mul4, g.Meta.Shift4 = mul, uint8(shift)
			byBucket := map[uint32]*policyPfx4Bucket{}
			for i, k := range keys {
				b := byBucket[at[i]]
				if b == nil {
					b = &policyPfx4Bucket{}
					byBucket[at[i]] = b
				}
				b.S[pos[i]] = raw(k.Prefix) | uint64(k.Prefix.Bits()+1)<<32 | uint64(k.Index)<<40
			}
			for at, b := range byBucket {
				g.Pfx4 = append(g.Pfx4, pfx4Entry{at, *b})
			}
			slices.SortFunc(g.Pfx4, func(a, b pfx4Entry) int { return cmp.Compare(a.Bucket, b.Bucket) })
			placed = true
			break
		}
		if placed {
			break
		}
	}
	g.Meta.Nlen4 = uint8(len(lens))
	hashed := map[int]bool{}
	for i, l := range lens {
		g.Meta.Len4[i] = uint8(l)
		g.Meta.M4[i] = binary.LittleEndian.Uint32(maskBytes(l, 4))
		hashed[l] = true
	}
	for _, p := range ps {
		if !hashed[p.Prefix.Bits()] {
			g.V4 = append(g.V4, v4Entry{policyLpm4Key{Prefixlen: uint32(p.Prefix.Bits()), Addr: p.Prefix.Addr().As4()}, p.Index})
		}
	}
	if len(g.V4) > 0 {
		g.Meta.Trie4 = 1
	}
}

// hashV6 is hashV4 for IPv6.
func (g *generation) hashV6(ps []identityPrefix) {
	lens, byLen := hashPlan(ps, pfx6Buckets)
	r := rand.New(rand.NewPCG(6, 6))
	words := func(p netip.Prefix) (uint64, uint64) {
		a := p.Addr().As16()
		return binary.LittleEndian.Uint64(a[:8]), binary.LittleEndian.Uint64(a[8:])
	}
	for ; len(lens) > 0; lens = lens[:len(lens)-1] {
		var keys []identityPrefix
		for _, l := range lens {
			keys = append(keys, byLen[l]...)
		}
		buckets := tableSize(len(keys), pfx6Buckets)
		shift := 64 - bits.TrailingZeros(uint(buckets))
		placed := false
		for range seedAttempts {
			mul := [3]uint64{oddMultiplier(r), oddMultiplier(r), oddMultiplier(r)}
			at, pos, ok := place(len(keys), buckets, func(i int) uint32 {
				a0, a1 := words(keys[i].Prefix)
				return uint32((a0*mul[0] + a1*mul[1] + uint64(keys[i].Prefix.Bits())*mul[2]) >> shift)
			})
			if !ok {
				continue
			}
			g.Meta.Mul6, g.Meta.Shift6 = mul, uint8(shift)
			byBucket := map[uint32]*policyPfx6Bucket{}
			for i, k := range keys {
				b := byBucket[at[i]]
				if b == nil {
					b = &policyPfx6Bucket{}
					byBucket[at[i]] = b
				}
				a0, a1 := words(k.Prefix)
				b.S[pos[i]] = policyPfx6Slot{A0: a0, A1: a1, Len1: uint32(k.Prefix.Bits() + 1), Index: k.Index}
			}
			for at, b := range byBucket {
				g.Pfx6 = append(g.Pfx6, pfx6Entry{at, *b})
			}
			slices.SortFunc(g.Pfx6, func(a, b pfx6Entry) int { return cmp.Compare(a.Bucket, b.Bucket) })
			placed = true
			break
		}
		if placed {
			break
		}
	}
	g.Meta.Nlen6 = uint8(len(lens))
	hashed := map[int]bool{}
	for i, l := range lens {
		g.Meta.Len6[i] = uint8(l)
		mb := maskBytes(l, 16)
		g.Meta.M6[i] = [2]uint64{binary.LittleEndian.Uint64(mb[:8]), binary.LittleEndian.Uint64(mb[8:])}
		hashed[l] = true
	}
	for _, p := range ps {
		if !hashed[p.Prefix.Bits()] {
			g.V6 = append(g.V6, v6Entry{policyLpm6Key{Prefixlen: uint32(p.Prefix.Bits()), Addr: p.Prefix.Addr().As16()}, p.Index})
		}
	}
	if len(g.V6) > 0 {
		g.Meta.Trie6 = 1
	}
}

// maskBytes is the network mask of a prefix length, n bytes long.
func maskBytes(bits, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		switch {
		case bits >= 8*(i+1):
			b[i] = 0xff
		case bits > 8*i:
			b[i] = byte(0xff << (8*(i+1) - bits))
		}
	}
	return b
}

// group is one (direction, identity, protocol): the ranges of its entries are
// disjoint, and the programs find them together.
type group struct {
	dir   policy.Direction
	id    policy.Identity
	proto uint8
}

// checkRules validates the fields of each entry and that the port ranges of one
// group are disjoint. It returns the entries by group, in port order.
func checkRules(rules []policy.RuleEntry) (map[group][]policy.RuleEntry, error) {
	ranges := map[group][]policy.RuleEntry{}
	for i, r := range rules {
		switch {
		case r.Direction != policy.Ingress && r.Direction != policy.Egress:
			return nil, fmt.Errorf("rule entry %d (rule %d): unknown direction %d", i, r.RuleID, r.Direction)
		case r.Proto != policy.ProtoICMP && r.Proto != policy.ProtoTCP && r.Proto != policy.ProtoUDP && r.Proto != policy.ProtoICMPv6:
			return nil, fmt.Errorf("rule entry %d (rule %d): unsupported protocol %d", i, r.RuleID, r.Proto)
		case r.Verdict != policy.Deny && r.Verdict != policy.Accept:
			return nil, fmt.Errorf("rule entry %d (rule %d): unknown verdict %d", i, r.RuleID, r.Verdict)
		case r.PortLo > r.PortHi:
			return nil, fmt.Errorf("rule entry %d (rule %d): empty port range %d-%d", i, r.RuleID, r.PortLo, r.PortHi)
		}
		g := group{r.Direction, r.Identity, r.Proto}
		ranges[g] = append(ranges[g], r)
	}
	for g, rs := range ranges {
		slices.SortFunc(rs, func(a, b policy.RuleEntry) int { return cmp.Compare(a.PortLo, b.PortLo) })
		for i := 1; i < len(rs); i++ {
			if rs[i].PortLo <= rs[i-1].PortHi {
				return nil, fmt.Errorf("rules %d and %d overlap: direction %d, identity %d, protocol %d, ports %d-%d and %d-%d",
					rs[i-1].RuleID, rs[i].RuleID, g.dir, g.id, g.proto, rs[i-1].PortLo, rs[i-1].PortHi, rs[i].PortLo, rs[i].PortHi)
			}
		}
	}
	return ranges, nil
}

// ruleKey is the trie key of one port prefix of a rule entry. The identity and the
// port are stored big-endian, so that the trie's bitwise prefixes run over their
// values from the most significant bit.
func ruleKey(dir policy.Direction, id policy.Identity, proto uint8, pp portPrefix) policyRuleKey {
	return policyRuleKey{
		Prefixlen: ruleKeyBits + uint32(pp.Bits),
		Identity:  hton32(uint32(id)),
		Dir:       uint8(dir),
		Proto:     proto,
		Port:      hton16(pp.Value),
	}
}

func compareRuleKeys(a, b policyRuleKey) int {
	return cmp.Or(
		cmp.Compare(ntoh32(a.Identity), ntoh32(b.Identity)),
		cmp.Compare(a.Dir, b.Dir),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(ntoh16(a.Port), ntoh16(b.Port)),
		cmp.Compare(a.Prefixlen, b.Prefixlen),
	)
}

// digest hashes what a policy enforces, in a fixed encoding: the prefixes (sorted,
// deduplicated) with their identities, the groups (sorted) with their ranges, and
// the rule names; not the version, and not the layout of the maps (hash
// multipliers, which lengths are hashed, counter slots).
func digest(prefixes []policy.IdentityPrefix, keys []group, groups map[group][]policy.RuleEntry, names map[uint32]string) [sha256.Size]byte {
	h := sha256.New()
	b := []byte("cvlan/bpfpolicy generation v4\n")
	flush := func() {
		if len(b) > 4096 {
			h.Write(b)
			b = b[:0]
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(prefixes)))
	for _, p := range prefixes {
		a := p.Prefix.Addr().As16()
		b = append(b, byte(p.Prefix.Addr().BitLen()/8))
		b = append(b, a[:]...)
		b = append(b, byte(p.Prefix.Bits()))
		b = binary.BigEndian.AppendUint32(b, uint32(p.Identity))
		flush()
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint32(b, uint32(k.id))
		b = append(b, byte(k.dir), k.proto)
		b = binary.BigEndian.AppendUint32(b, uint32(len(groups[k])))
		for _, r := range groups[k] {
			b = binary.BigEndian.AppendUint16(b, r.PortLo)
			b = binary.BigEndian.AppendUint16(b, r.PortHi)
			b = binary.BigEndian.AppendUint32(b, r.RuleID)
			b = append(b, byte(r.Verdict))
		}
		flush()
	}
	ids := make([]uint32, 0, len(names))
	for id := range names {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint32(b, id)
		b = binary.BigEndian.AppendUint32(b, uint32(len(names[id])))
		b = append(b, names[id]...)
		flush()
	}
	h.Write(b)
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// hton32 returns the uint32 whose in-memory bytes are v in network byte order, as a
// C __be32 field holds it.
func hton32(v uint32) uint32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return binary.NativeEndian.Uint32(b[:])
}

func ntoh32(v uint32) uint32 { return hton32(v) }

func hton16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func ntoh16(v uint16) uint16 { return hton16(v) }
