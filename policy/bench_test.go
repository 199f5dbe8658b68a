package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/policy"
)

// benchTenant builds a tenant of the size the controller must handle: nodes with
// one to three of 50 tags (dual-stack overlay addresses, one in a hundred a
// gateway with a route), and rules mostly between tags, some naming nodes or
// CIDRs, a few "*", a few deny, ports single, listed or ranged.
func benchTenant(nNodes, nRules int) (*policy.Policy, []policy.Node) {
	r := rand.New(rand.NewPCG(uint64(nNodes), uint64(nRules)))
	const nTags = 50
	tags := make([]string, nTags)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%d", i)
	}
	nodes := make([]policy.Node, nNodes)
	for i := range nodes {
		n := &nodes[i]
		n.ID = fmt.Sprintf("node-%05d", i)
		n.Name = fmt.Sprintf("host%d", i)
		for range 1 + r.IntN(3) {
			n.Tags = append(n.Tags, tags[r.IntN(nTags)])
		}
		n.Addrs = []netip.Addr{
			netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}),
			netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x7a, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
		}
		if i%100 == 0 {
			n.Routes = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)}
		}
	}
	sel := func() string {
		switch k := r.IntN(100); {
		case k < 2:
			return `"*"`
		case k < 6:
			return nodes[r.IntN(nNodes)].Name
		case k < 9:
			return fmt.Sprintf(`"10.%d.0.0/16"`, r.IntN(40))
		}
		return "tag:" + tags[r.IntN(nTags)]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tags: [%s]\nrules:\n", strings.Join(tags, ", "))
	for i := range nRules {
		fmt.Fprintf(&b, "  - name: rule%d\n", i)
		if r.IntN(20) == 0 {
			b.WriteString("    action: deny\n")
		}
		fmt.Fprintf(&b, "    src: [%s, %s]\n", sel(), sel())
		fmt.Fprintf(&b, "    dst: [tag:%s]\n", tags[r.IntN(nTags)])
		switch r.IntN(4) {
		case 0:
			fmt.Fprintf(&b, "    ports: [%d]\n    proto: tcp\n", []int{22, 80, 443, 5432, 6379}[r.IntN(5)])
		case 1:
			lo := 1000 + r.IntN(8000)
			fmt.Fprintf(&b, "    ports: [%d, \"%d-%d\"]\n", 443, lo, lo+r.IntN(500))
		case 2:
			b.WriteString("    proto: icmp\n")
		default:
			fmt.Fprintf(&b, "    ports: [%d]\n    proto: udp\n", 5000+r.IntN(100))
		}
	}
	p, err := policy.Parse([]byte(b.String()))
	if err != nil {
		panic(err)
	}
	return p, nodes
}

// BenchmarkCompile measures Compile: the work shared by all nodes.
func BenchmarkCompile(b *testing.B) {
	for _, size := range []struct{ nodes, rules int }{{1000, 1000}, {10000, 1000}} {
		p, nodes := benchTenant(size.nodes, size.rules)
		b.Run(fmt.Sprintf("nodes=%d/rules=%d", size.nodes, size.rules), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := policy.Compile(p, nodes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNode measures one node's part (Node and Peers), what the controller
// computes for each node it sends a map to; reported per node, with its size.
func BenchmarkNode(b *testing.B) {
	for _, size := range []struct{ nodes, rules int }{{1000, 1000}, {10000, 1000}} {
		p, nodes := benchTenant(size.nodes, size.rules)
		c, err := policy.Compile(p, nodes)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("nodes=%d/rules=%d", size.nodes, size.rules), func(b *testing.B) {
			b.ReportAllocs()
			var prefixes, entries, peers, n int
			for b.Loop() {
				id := nodes[(n*7919)%len(nodes)].ID
				np := c.Node(id)
				prefixes += len(np.Prefixes)
				entries += len(np.Rules)
				peers += len(c.Peers(id))
				n++
			}
			b.ReportMetric(float64(prefixes)/float64(n), "prefixes/node")
			b.ReportMetric(float64(entries)/float64(n), "entries/node")
			b.ReportMetric(float64(peers)/float64(n), "peers/node")
		})
	}
}
