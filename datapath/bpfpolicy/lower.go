package bpfpolicy

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
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

// maxRuleIDs is how many rule ids the counter map holds (MAX_RULES in policy.h).
const maxRuleIDs = 16384

// A group's ranges go into the group hash if there are at most groupRanges of them
// (GROUP_RANGES in policy.h), else into the rule trie, marked by groupInTrie.
const (
	groupRanges = len(policyGroupVal{}.R)
	groupInTrie = 0xffffffff
)

// ruleKeyBits is the length of a rule key's identity, direction and protocol, the
// bits before the port prefix.
const ruleKeyBits = 32 + 8 + 8

// hostEntry, v4Entry, v6Entry and ruleEntry are one entry of the host hash and of
// the identity and rule tries.
type hostEntry struct {
	Key      policyHostKey
	Identity uint32
}

type v4Entry struct {
	Key      policyLpm4Key
	Identity uint32
}

type v6Entry struct {
	Key      policyLpm6Key
	Identity uint32
}

type groupEntry struct {
	Key policyGroupKey
	Val policyGroupVal
}

type ruleEntry struct {
	Key policyRuleKey
	Val policyRuleVal
}

// generation is what one policy puts into the maps of one generation slot, plus the
// digest that tells whether two policies load the same thing.
type generation struct {
	Hosts []hostEntry // /32 and /128 prefixes
	V4    []v4Entry   // shorter prefixes

	V6      []v6Entry
	Groups  []groupEntry
	Rules   []ruleEntry // the entries of groups too large for the group hash
	RuleIDs []uint32    // each id in Rules once, ascending
	Names   map[uint32]string
	Version int64
	Digest  [sha256.Size]byte
}

// lower turns a compiled policy into map entries. nil is the zero policy (deny
// everything). It rejects what the compiler's contract rules out, so that a broken
// policy is never half-written: prefixes that are invalid, IPv4-mapped or name
// IdentityAny, one prefix with two identities, unknown directions, protocols or
// verdicts, empty or overlapping port ranges of one (direction, identity, protocol),
// more than maxRuleIDs rule ids.
func lower(p *policy.NodePolicy) (*generation, error) {
	if p == nil {
		p = &policy.NodePolicy{}
	}
	g := &generation{Version: p.Version, Names: p.RuleNames}
	seen := map[netip.Prefix]policy.Identity{}
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
		switch {
		case pfx.IsSingleIP():
			k := policyHostKey{Family: 6, Addr: pfx.Addr().As16()}
			if pfx.Addr().Is4() {
				k = policyHostKey{Family: 4}
				a := pfx.Addr().As4()
				copy(k.Addr[:], a[:])
			}
			g.Hosts = append(g.Hosts, hostEntry{k, uint32(ip.Identity)})
		case pfx.Addr().Is4():
			g.V4 = append(g.V4, v4Entry{policyLpm4Key{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As4()}, uint32(ip.Identity)})
		default:
			g.V6 = append(g.V6, v6Entry{policyLpm6Key{Prefixlen: uint32(pfx.Bits()), Addr: pfx.Addr().As16()}, uint32(ip.Identity)})
		}
	}
	slices.SortFunc(g.Hosts, func(a, b hostEntry) int {
		return cmp.Or(cmp.Compare(a.Key.Family, b.Key.Family), slices.Compare(a.Key.Addr[:], b.Key.Addr[:]))
	})
	slices.SortFunc(g.V4, func(a, b v4Entry) int {
		return cmp.Or(slices.Compare(a.Key.Addr[:], b.Key.Addr[:]), cmp.Compare(a.Key.Prefixlen, b.Key.Prefixlen))
	})
	slices.SortFunc(g.V6, func(a, b v6Entry) int {
		return cmp.Or(slices.Compare(a.Key.Addr[:], b.Key.Addr[:]), cmp.Compare(a.Key.Prefixlen, b.Key.Prefixlen))
	})

	groups, err := checkRules(p.Rules)
	if err != nil {
		return nil, err
	}
	ids := map[uint32]bool{}
	for key, rs := range groups {
		e := groupEntry{Key: policyGroupKey{Identity: uint32(key.id), Dir: uint8(key.dir), Proto: key.proto}}
		if len(rs) > groupRanges {
			e.Val.N = groupInTrie
		}
		for i, r := range rs {
			ids[r.RuleID] = true
			if e.Val.N == groupInTrie {
				for _, pp := range portPrefixes(r.PortLo, r.PortHi) {
					g.Rules = append(g.Rules, ruleEntry{
						Key: ruleKey(r.Direction, r.Identity, r.Proto, pp),
						Val: policyRuleVal{RuleId: r.RuleID, Verdict: uint8(r.Verdict)},
					})
				}
				continue
			}
			e.Val.R[i] = policyPortRange{Lo: r.PortLo, Hi: r.PortHi, RuleId: r.RuleID, Verdict: uint8(r.Verdict)}
			e.Val.N++
		}
		g.Groups = append(g.Groups, e)
	}
	slices.SortFunc(g.Groups, func(a, b groupEntry) int {
		return cmp.Or(cmp.Compare(a.Key.Identity, b.Key.Identity), cmp.Compare(a.Key.Dir, b.Key.Dir), cmp.Compare(a.Key.Proto, b.Key.Proto))
	})
	slices.SortFunc(g.Rules, func(a, b ruleEntry) int { return compareRuleKeys(a.Key, b.Key) })
	for id := range ids {
		g.RuleIDs = append(g.RuleIDs, id)
	}
	slices.Sort(g.RuleIDs)
	if len(g.RuleIDs) > maxRuleIDs {
		return nil, fmt.Errorf("the policy uses %d rule ids, more than the %d the counters hold", len(g.RuleIDs), maxRuleIDs)
	}
	g.Digest = g.digest()
	return g, nil
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

// digest hashes everything the generation writes and the rule names, in a fixed
// encoding, but not the version.
func (g *generation) digest() [sha256.Size]byte {
	h := sha256.New()
	b := []byte("cvlan/bpfpolicy generation v3\n")
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.Hosts)))
	for _, e := range g.Hosts {
		b = binary.BigEndian.AppendUint32(b, e.Key.Family)
		b = append(b, e.Key.Addr[:]...)
		b = binary.BigEndian.AppendUint32(b, e.Identity)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.V4)))
	for _, e := range g.V4 {
		b = binary.BigEndian.AppendUint32(b, e.Key.Prefixlen)
		b = append(b, e.Key.Addr[:]...)
		b = binary.BigEndian.AppendUint32(b, e.Identity)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.V6)))
	for _, e := range g.V6 {
		b = binary.BigEndian.AppendUint32(b, e.Key.Prefixlen)
		b = append(b, e.Key.Addr[:]...)
		b = binary.BigEndian.AppendUint32(b, e.Identity)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.Groups)))
	for _, e := range g.Groups {
		b = binary.BigEndian.AppendUint32(b, e.Key.Identity)
		b = append(b, e.Key.Dir, e.Key.Proto)
		b = binary.BigEndian.AppendUint32(b, e.Val.N)
		for _, r := range e.Val.R {
			b = binary.BigEndian.AppendUint16(b, r.Lo)
			b = binary.BigEndian.AppendUint16(b, r.Hi)
			b = binary.BigEndian.AppendUint32(b, r.RuleId)
			b = append(b, r.Verdict)
		}
		if len(b) > 4096 {
			h.Write(b)
			b = b[:0]
		}
	}
	h.Write(b)
	b = binary.BigEndian.AppendUint32(b[:0], uint32(len(g.Rules)))
	for _, e := range g.Rules {
		b = binary.BigEndian.AppendUint32(b, e.Key.Prefixlen)
		b = binary.BigEndian.AppendUint32(b, ntoh32(e.Key.Identity))
		b = append(b, e.Key.Dir, e.Key.Proto)
		b = binary.BigEndian.AppendUint16(b, ntoh16(e.Key.Port))
		b = binary.BigEndian.AppendUint32(b, e.Val.RuleId)
		b = append(b, e.Val.Verdict)
		if len(b) > 4096 {
			h.Write(b)
			b = b[:0]
		}
	}
	h.Write(b)
	ids := make([]uint32, 0, len(g.Names))
	for id := range g.Names {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = binary.BigEndian.AppendUint32(b[:0], uint32(len(ids)))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint32(b, id)
		b = binary.BigEndian.AppendUint32(b, uint32(len(g.Names[id])))
		b = append(b, g.Names[id]...)
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
