package bpfpolicy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/cvlan/cvlan/policy"
)

// randomPolicy makes a policy with nested prefixes of both families, and, for random
// (direction, identity, protocol) groups including IdentityAny and world, disjoint
// random port ranges with random verdicts: what the compiler may produce, without
// its merging of IdentityAny (the programs and the reference fall back alike).
func randomPolicy(r *rand.Rand, version int64) *policy.NodePolicy {
	p := &policy.NodePolicy{Version: version, RuleNames: map[uint32]string{}}
	nid := 1 + r.IntN(8)
	seen := map[netip.Prefix]bool{}
	for range 1 + r.IntN(40) {
		var a netip.Addr
		var bits int
		if r.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(256))})
			bits = 8 + r.IntN(25)
		} else {
			a = netip.AddrFrom16([16]byte{0xfd, 0, 0, byte(r.IntN(4)), 15: byte(r.IntN(256))})
			bits = 8 + r.IntN(121)
		}
		if r.IntN(3) == 0 { // host prefixes go to the host hash, not the tries
			bits = a.BitLen()
		}
		pfx := netip.PrefixFrom(a, bits).Masked()
		if seen[pfx] {
			continue
		}
		seen[pfx] = true
		p.Prefixes = append(p.Prefixes, policy.IdentityPrefix{Prefix: pfx, Identity: policy.Identity(1 + r.IntN(nid))})
	}
	ids := []policy.Identity{policy.IdentityWorld, policy.IdentityAny}
	for i := range nid {
		ids = append(ids, policy.Identity(i+1))
	}
	for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
		for _, id := range ids {
			for _, proto := range []uint8{protoTCP, protoUDP, protoICMP, protoICMPv6} {
				if r.IntN(3) == 0 {
					continue
				}
				if proto == protoICMP || proto == protoICMPv6 {
					rule := uint32(1 + r.IntN(30))
					p.Rules = append(p.Rules, policy.RuleEntry{Direction: dir, Identity: id, Proto: proto, PortHi: 65535, Verdict: policy.Verdict(r.IntN(2)), RuleID: rule})
					p.RuleNames[rule] = fmt.Sprint("r", rule)
					continue
				}
				cuts := []int{}
				n := 1 + r.IntN(4)
				if r.IntN(8) == 0 { // more ranges than the group hash holds: the trie
					n = groupRanges + r.IntN(8)
				}
				for range 2 * n {
					cuts = append(cuts, r.IntN(65536))
				}
				slices.Sort(cuts)
				cuts = slices.Compact(cuts)
				for i := 0; i+1 < len(cuts); i += 2 {
					rule := uint32(1 + r.IntN(30))
					p.Rules = append(p.Rules, policy.RuleEntry{Direction: dir, Identity: id, Proto: proto,
						PortLo: uint16(cuts[i]), PortHi: uint16(cuts[i+1]), Verdict: policy.Verdict(r.IntN(2)), RuleID: rule})
					p.RuleNames[rule] = fmt.Sprint("r", rule)
				}
			}
		}
	}
	return p
}

// randomRemote is an address inside one of p's prefixes, or anywhere in 10/8 or fd00::/8.
func randomRemote(r *rand.Rand, p *policy.NodePolicy, v6 bool) netip.Addr {
	var cands []netip.Prefix
	for _, ip := range p.Prefixes {
		if ip.Prefix.Addr().Is6() == v6 {
			cands = append(cands, ip.Prefix)
		}
	}
	var b []byte
	if v6 {
		b = []byte{0xfd, 0, 0, byte(r.IntN(4)), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(r.IntN(256))}
	} else {
		b = []byte{10, byte(r.IntN(4)), byte(r.IntN(4)), byte(r.IntN(256))}
	}
	if len(cands) > 0 && r.IntN(4) != 0 {
		pfx := cands[r.IntN(len(cands))]
		base := pfx.Addr().AsSlice()
		for i := range b { // keep the prefix's bits, randomize the rest
			bit := i * 8
			switch {
			case bit+8 <= pfx.Bits():
				b[i] = base[i]
			case bit < pfx.Bits():
				mask := byte(0xff << (8 - (pfx.Bits() - bit)))
				b[i] = base[i]&mask | byte(r.IntN(256))&^mask
			default:
				b[i] = byte(r.IntN(256))
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// randomPort favours the edges of p's ranges. Destination ports stay below 40000 and
// source ports above, so that no random packet is the reply of an earlier one.
func randomPort(r *rand.Rand, p *policy.NodePolicy) uint16 {
	if len(p.Rules) > 0 && r.IntN(2) == 0 {
		e := p.Rules[r.IntN(len(p.Rules))]
		if port := []int{int(e.PortLo) - 1, int(e.PortLo), int(e.PortHi), int(e.PortHi) + 1}[r.IntN(4)]; port >= 0 && port < 40000 {
			return uint16(port)
		}
	}
	return uint16(r.IntN(40000))
}

// TestDifferential compares the programs' verdict, drop reason and deciding rule with
// policy.NodePolicy.Lookup, the reference, on random policies and packets.
func TestDifferential(t *testing.T) {
	e := loaded(t, nil, nil)
	r := rand.New(rand.NewPCG(4, 2))
	local4, local6 := netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fc00::1")
	outcomes := map[string]int{}
	trieRounds := 0 // rounds with a group too large for the group hash
	for round := range 12 {
		p := randomPolicy(r, int64(round+1))
		if err := e.Set(p); err != nil {
			t.Fatalf("round %d: Set: %v", round, err)
		}
		if g, _ := lower(p); len(g.Rules) > 0 {
			trieRounds++
		}
		for range 150 {
			v6 := r.IntN(2) == 0
			dir := policy.Direction(r.IntN(2))
			remote, local := randomRemote(r, p, v6), local4
			if v6 {
				local = local6
			}
			proto := []uint8{protoTCP, protoUDP, protoICMP}[r.IntN(3)]
			if v6 && proto == protoICMP {
				proto = protoICMPv6
			}
			port := randomPort(r, p)
			var l4 []byte
			switch proto {
			case protoTCP:
				l4 = tcp(uint16(40000+r.IntN(25536)), port, r.IntN(64))
			case protoUDP:
				l4 = udp(uint16(40000+r.IntN(25536)), port, r.IntN(64))
			default:
				typ := uint8(icmpEchoRequest)
				if v6 {
					typ = icmp6EchoRequest
				}
				l4 = icmp(typ, 0, uint16(1+r.IntN(65535)), nil)
				port = 0
			}
			src, dst := remote, local
			if dir == policy.Egress {
				src, dst = local, remote
			}
			pkt := ip(src.String(), dst.String(), proto, l4)
			want := step{dir: dir, pkt: pkt, want: "drop:no_rule"}
			if en, ok := p.Lookup(dir, remote, proto, port); ok {
				want.rule = en.RuleID
				want.want = "drop:deny_rule"
				if en.Verdict == policy.Accept {
					want.want = "pass:rule"
				}
			}
			outcomes[want.want]++
			ok := t.Run(fmt.Sprintf("round%d/%s/%s/%d/%d", round, dir, remote, proto, port), func(t *testing.T) { want.check(t, e) })
			if !ok {
				t.Fatalf("policy of round %d: %+v", round, p)
			}
		}
	}
	t.Logf("outcomes: %v; %d rounds used the rule trie", outcomes, trieRounds)
	if trieRounds == 0 {
		t.Error("no round had a group large enough for the rule trie")
	}
	for _, o := range []string{"pass:rule", "drop:deny_rule", "drop:no_rule"} {
		if outcomes[o] < 100 {
			t.Errorf("only %d packets with outcome %s: the generator needs tuning", outcomes[o], o)
		}
	}
}
