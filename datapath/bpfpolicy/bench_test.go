package bpfpolicy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cvlan/cvlan/policy"
)

// benchPolicy has nprefix prefixes (/32 and /24, IPv4 and IPv6) over 1000 identities
// and nrules rule entries, each a random port range of a random identity, direction
// and protocol. It returns a remote and port that an accept entry covers.
func benchPolicy(nprefix, nrules int) (p *policy.NodePolicy, remote netip.Addr, port uint16) {
	r := rand.New(rand.NewPCG(7, 7))
	p = &policy.NodePolicy{Version: 1}
	const nid = 1000
	seen := map[netip.Prefix]bool{}
	for len(p.Prefixes) < nprefix {
		var pfx netip.Prefix
		switch r.IntN(4) {
		case 0:
			pfx = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256))}), 24)
		case 1, 2:
			pfx = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), 32)
		default:
			var a [16]byte
			a[0] = 0xfd
			for i := 8; i < 16; i++ {
				a[i] = byte(r.IntN(256))
			}
			pfx = netip.PrefixFrom(netip.AddrFrom16(a), 128)
		}
		if !seen[pfx.Masked()] {
			seen[pfx.Masked()] = true
			p.Prefixes = append(p.Prefixes, policy.IdentityPrefix{Prefix: pfx.Masked(), Identity: policy.Identity(1 + r.IntN(nid))})
		}
	}
	// Ranges are laid out per (direction, identity, protocol) group, each group
	// taking the next free stretch of ports, so that they stay disjoint.
	type group struct {
		dir   policy.Direction
		id    policy.Identity
		proto uint8
	}
	next := map[group]int{}
	for len(p.Rules) < nrules {
		g := group{policy.Direction(r.IntN(2)), policy.Identity(1 + r.IntN(nid)), []uint8{protoTCP, protoUDP}[r.IntN(2)]}
		lo := next[g] + r.IntN(100)
		hi := lo + r.IntN(200)
		if hi > 65535 {
			continue
		}
		next[g] = hi + 1
		p.Rules = append(p.Rules, policy.RuleEntry{Direction: g.dir, Identity: g.id, Proto: g.proto,
			PortLo: uint16(lo), PortHi: uint16(hi), Verdict: policy.Accept, RuleID: uint32(len(p.Rules) + 1)})
	}
	// The packet: from the first IPv4 /32, to a port of an entry for its identity.
	for _, ip := range p.Prefixes {
		if ip.Prefix.Addr().Is4() && ip.Prefix.Bits() == 32 {
			remote = ip.Prefix.Addr()
			p.Rules = append(p.Rules, policy.RuleEntry{Direction: policy.Ingress, Identity: ip.Identity, Proto: protoUDP,
				PortLo: 65500, PortHi: 65535, Verdict: policy.Accept, RuleID: uint32(len(p.Rules) + 1)})
			break
		}
	}
	return p, remote, 65535 - 17 // inside the range, an uneven number of prefixes deep
}

// BenchmarkVerdict measures one packet through the ingress program with 10k prefixes
// and 10, 1k and 10k rule entries: an accepted packet of a tracked flow (the
// conntrack hint and flow cache, identity and rule lookups, counters) and a packet
// no rule matches (lookups, including the IdentityAny fallback, and the drop
// counter), and for scale a frame dropped before any lookup. ns/pkt is the kernel's
// own measurement of BPF_PROG_TEST_RUN: the b.N runs go in 10 chunks, and ns/pkt is
// the best chunk's time per run, ns/pkt-mean the mean over all. On a shared machine
// other load (a busy SMT sibling, interrupts) only ever slows a chunk, by up to
// half again; the best chunk is the program's cost.
func BenchmarkVerdict(b *testing.B) {
	for _, nrules := range []int{10, 1000, 10000} {
		p, remote, port := benchPolicy(10000, nrules)
		if _, ok := p.Lookup(policy.Ingress, remote, protoUDP, port); !ok {
			b.Fatal("the benchmark packet matches no rule")
		}
		e := loaded(b, p, nil)
		for _, c := range []struct {
			name string
			pkt  []byte
			want uint32
		}{
			{"accept", ip(remote.String(), local4, protoUDP, udp(40000, port, 64)), actOK},
			{"drop", ip(remote.String(), local4, protoUDP, udp(40000, 1, 64)), actShot},
			// The floor: a frame dropped before any lookup (BPF_PROG_TEST_RUN's own
			// cost per run, the program's entry and a drop counter).
			{"floor", frame(0x88cc, make([]byte, 64)), actShot},
		} {
			b.Run(fmt.Sprintf("rules=%d/%s", nrules, c.name), func(b *testing.B) {
				ret, _, err := e.objs.CvlanIngress.Benchmark(c.pkt, 1, nil)
				if err != nil || ret != c.want {
					b.Fatalf("verdict %d, %v; want %d", ret, err, c.want)
				}
				const chunks = 10
				best, total := time.Duration(math.MaxInt64), time.Duration(0)
				b.ResetTimer()
				for i := range chunks {
					n := b.N/chunks + b.N%chunks*(i/(chunks-1)) // the remainder in the last
					if n == 0 {
						continue
					}
					ret, per, err := e.objs.CvlanIngress.Benchmark(c.pkt, n, nil)
					if err != nil || ret != c.want {
						b.Fatalf("verdict %d, %v; want %d", ret, err, c.want)
					}
					best, total = min(best, per), total+per*time.Duration(n)
				}
				b.StopTimer()
				b.ReportMetric(float64(best.Nanoseconds()), "ns/pkt")
				b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/pkt-mean")
			})
		}
	}
}
