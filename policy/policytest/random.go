package policytest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/cvlan/cvlan/policy"
)

// The generator draws from small universes so that random selectors, prefixes,
// routes and port ranges overlap often: that is where compilers go wrong.
var (
	tagPool  = []string{"web", "db", "admin", "ops", "ci", "k8s", "gw", "dev"}
	cidrPool = []string{
		"0.0.0.0/0", "100.64.0.0/10", "100.64.0.0/27", "100.64.0.16/28", "100.64.0.8/29", "100.64.0.3/32",
		"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "10.2.0.0/16", "192.168.1.0/24", "192.168.1.7/32",
		"::/0", "fd7a::/64", "fd7a::/124", "fd7a::8/125", "fd00:1::/48", "fd00:1:0:1::/64", "fd00:2::/48",
	}
	routePool = []string{
		"10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "192.168.1.0/24", "10.3.0.0/24",
		"fd00:1::/48", "fd00:2::/48", "fd00:1:0:1::/64",
	}
	portPool = []string{"22", "80", "443", "8000-8100", "8050", "8080-9000", "53", "1-1024", "1000-2000", "65535"}
	// Ports are chosen around the edges of portPool's ranges.
	probePorts = []uint16{0, 1, 2, 21, 22, 23, 52, 53, 54, 79, 80, 81, 442, 443, 444, 999, 1000, 1001, 1024, 1025,
		1999, 2000, 2001, 7999, 8000, 8049, 8050, 8051, 8080, 8100, 8101, 8999, 9000, 9001, 65534, 65535}
	probeProtos = []uint8{policy.ProtoTCP, policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoICMPv6, 47}
)

// Config sizes random policies.
type Config struct {
	Nodes, Rules, Groups, Hosts int
}

// DefaultConfig gives policies small enough to reason about when one fails.
var DefaultConfig = Config{Nodes: 12, Rules: 8, Groups: 3, Hosts: 3}

// Random is a generated tenant: a policy document and its nodes.
type Random struct {
	Doc   []byte
	Nodes []policy.Node
	tags  []string
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// NewRandom generates a valid policy document (without tests) and nodes.
func NewRandom(r *rand.Rand, cfg Config) *Random {
	g := &Random{}
	for _, t := range tagPool {
		if r.IntN(4) != 0 {
			g.tags = append(g.tags, t)
		}
	}
	if len(g.tags) == 0 {
		g.tags = tagPool[:1]
	}
	g.Nodes = randomNodes(r, cfg.Nodes, g.tags)

	var b strings.Builder
	fmt.Fprintf(&b, "tags: [%s]\n", strings.Join(g.tags, ", "))
	var groups []string
	if cfg.Groups > 0 {
		b.WriteString("groups:\n")
	}
	for i := range cfg.Groups {
		name := fmt.Sprintf("g%d", i)
		var members []string
		for range r.IntN(4) {
			switch k := r.IntN(5); {
			case k < 2:
				members = append(members, "tag:"+pick(r, g.tags))
			case k < 4:
				members = append(members, g.nodeName(r))
			case len(groups) > 0:
				members = append(members, "group:"+pick(r, groups)) // earlier groups only: no cycles
			}
		}
		fmt.Fprintf(&b, "  %s: [%s]\n", name, strings.Join(members, ", "))
		groups = append(groups, name)
	}
	var hosts []string
	if cfg.Hosts > 0 {
		b.WriteString("hosts:\n")
	}
	for i := range cfg.Hosts {
		name := fmt.Sprintf("h%d", i)
		fmt.Fprintf(&b, "  %s: %s\n", name, g.cidr(r))
		hosts = append(hosts, name)
	}
	b.WriteString("rules:\n")
	for i := range cfg.Rules {
		b.WriteString("  - ")
		if r.IntN(3) != 0 {
			fmt.Fprintf(&b, "name: r%d\n    ", i)
		}
		if r.IntN(4) == 0 {
			b.WriteString("action: deny\n    ")
		}
		fmt.Fprintf(&b, "src: [%s]\n", strings.Join(g.selectors(r, groups, hosts), ", "))
		fmt.Fprintf(&b, "    dst: [%s]\n", strings.Join(g.selectors(r, groups, hosts), ", "))
		proto := pick(r, []string{"any", "any", "tcp", "tcp", "udp", "icmp"})
		fmt.Fprintf(&b, "    proto: %s\n", proto)
		if proto != "icmp" && r.IntN(3) != 0 {
			var ports []string
			for range 1 + r.IntN(3) {
				ports = append(ports, fmt.Sprintf("%q", pick(r, portPool)))
			}
			fmt.Fprintf(&b, "    ports: [%s]\n", strings.Join(ports, ", "))
		}
	}
	g.Doc = []byte(b.String())
	return g
}

func (g *Random) nodeName(r *rand.Rand) string {
	if r.IntN(6) == 0 || len(g.Nodes) == 0 {
		return "ghost" // no node has this name
	}
	return pick(r, g.Nodes).Name
}

func (g *Random) cidr(r *rand.Rand) string {
	if r.IntN(3) == 0 && len(g.Nodes) > 0 {
		if n := pick(r, g.Nodes); len(n.Addrs) > 0 {
			return pick(r, n.Addrs).String()
		}
	}
	return pick(r, cidrPool)
}

func (g *Random) selectors(r *rand.Rand, groups, hosts []string) []string {
	var out []string
	for range 1 + r.IntN(3) {
		switch k := r.IntN(12); {
		case k == 0:
			out = append(out, `"*"`)
		case k < 4:
			out = append(out, "tag:"+pick(r, g.tags))
		case k < 6 && len(groups) > 0:
			out = append(out, "group:"+pick(r, groups))
		case k < 7 && len(hosts) > 0:
			out = append(out, "host:"+pick(r, hosts))
		case k < 10:
			out = append(out, `"`+g.cidr(r)+`"`)
		default:
			out = append(out, g.nodeName(r))
		}
	}
	return out
}

func randomNodes(r *rand.Rand, n int, tags []string) []policy.Node {
	var nodes []policy.Node
	ids := r.Perm(n) // IDs sort differently from names
	for i := range n {
		nd := policy.Node{ID: fmt.Sprintf("id-%02d", ids[i]), Name: fmt.Sprintf("n%d", i)}
		for range r.IntN(4) {
			nd.Tags = append(nd.Tags, pick(r, tags))
		}
		if r.IntN(10) != 0 {
			nd.Addrs = append(nd.Addrs, netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}))
		}
		if r.IntN(2) == 0 {
			nd.Addrs = append(nd.Addrs, netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x7a, 15: byte(i + 1)}))
		}
		if r.IntN(4) == 0 {
			for range 1 + r.IntN(2) {
				nd.Routes = append(nd.Routes, netip.MustParsePrefix(pick(r, routePool)))
			}
		}
		nodes = append(nodes, nd)
	}
	return nodes
}

// Packet is one random flow.
type Packet struct {
	Src, Dst policy.Endpoint
	Proto    uint8
	Port     uint16
}

func (p Packet) String() string {
	return fmt.Sprintf("%s → %s %s/%d", p.Src, p.Dst, policy.ProtoName(p.Proto), p.Port)
}

// Packet draws a flow between nodes, their addresses, addresses in their routes
// and in the document's prefixes, and addresses outside everything.
func (g *Random) Packet(r *rand.Rand) Packet {
	return Packet{Src: g.endpoint(r), Dst: g.endpoint(r), Proto: pick(r, probeProtos), Port: pick(r, probePorts)}
}

func (g *Random) endpoint(r *rand.Rand) policy.Endpoint {
	n := pick(r, g.Nodes)
	switch k := r.IntN(10); {
	case k < 5:
		return policy.NodeEndpoint(n.ID)
	case k < 7 && len(n.Addrs) > 0:
		return policy.AddrEndpoint(pick(r, n.Addrs))
	case k < 8 && len(n.Routes) > 0:
		return policy.AddrEndpoint(randomIn(r, pick(r, n.Routes)))
	case k < 9:
		return policy.AddrEndpoint(randomIn(r, netip.MustParsePrefix(pick(r, cidrPool))))
	}
	return policy.AddrEndpoint(pick(r, []netip.Addr{
		netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("100.64.0.200"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("10.1.2.255"), netip.MustParseAddr("10.1.2.128"), netip.MustParseAddr("fd7a::ff"),
	}))
}

// randomIn returns an address of p: its first, its last or one in between.
func randomIn(r *rand.Rand, p netip.Prefix) netip.Addr {
	a := p.Addr().AsSlice()
	switch r.IntN(3) {
	case 0:
		return p.Addr()
	case 1:
		return last(p)
	}
	for i := p.Bits(); i < len(a)*8; i++ {
		if r.IntN(2) == 0 {
			a[i/8] |= 0x80 >> (i % 8)
		}
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// TestEndpoint draws a single (not group) test endpoint.
func (g *Random) TestEndpoint(r *rand.Rand) string {
	switch k := r.IntN(6); {
	case k < 2:
		return "tag:" + pick(r, g.tags)
	case k < 4:
		return g.nodeName(r)
	case k < 5:
		n := pick(r, g.Nodes)
		if len(n.Addrs) > 0 {
			return pick(r, n.Addrs).String()
		}
	}
	return randomIn(r, netip.MustParsePrefix(pick(r, cidrPool))).String()
}

// FixedNodes is a small, fixed tenant: tagged dual-stack nodes, an IPv4-only one,
// a gateway routing two subnets, one named alice and one without addresses.
func FixedNodes() []policy.Node {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	return []policy.Node{
		{ID: "n-admin", Name: "admin1", Tags: []string{"admin"}, Addrs: []netip.Addr{a("100.64.0.1"), a("fd7a::1")}},
		{ID: "n-web1", Name: "web1", Tags: []string{"web"}, Addrs: []netip.Addr{a("100.64.0.2"), a("fd7a::2")}},
		{ID: "n-web2", Name: "web2", Tags: []string{"web", "ops"}, Addrs: []netip.Addr{a("100.64.0.3"), a("fd7a::3")}},
		{ID: "n-db", Name: "db1", Tags: []string{"db"}, Addrs: []netip.Addr{a("100.64.0.4")}},
		{ID: "n-gw", Name: "gw", Tags: []string{"gw"}, Addrs: []netip.Addr{a("100.64.0.5"), a("fd7a::5")},
			Routes: []netip.Prefix{p("10.1.0.0/16"), p("fd00:1::/48")}},
		{ID: "n-alice", Name: "alice", Addrs: []netip.Addr{a("100.64.0.6")}},
		{ID: "n-new", Name: "newbie", Tags: []string{"web"}},
	}
}

// FixedPackets are flows among FixedNodes worth checking for any policy.
func FixedPackets() []Packet {
	ids := []string{"n-admin", "n-web1", "n-web2", "n-db", "n-gw", "n-alice"}
	var out []Packet
	for i, s := range ids {
		d := ids[(i+1)%len(ids)]
		out = append(out,
			Packet{policy.NodeEndpoint(s), policy.NodeEndpoint(d), policy.ProtoTCP, 22},
			Packet{policy.NodeEndpoint(d), policy.NodeEndpoint(s), policy.ProtoUDP, 53},
			Packet{policy.NodeEndpoint(s), policy.NodeEndpoint(d), policy.ProtoICMP, 0})
	}
	out = append(out,
		Packet{policy.AddrEndpoint(netip.MustParseAddr("10.1.2.3")), policy.NodeEndpoint("n-web1"), policy.ProtoTCP, 443},
		Packet{policy.NodeEndpoint("n-admin"), policy.AddrEndpoint(netip.MustParseAddr("fd00:1::9")), policy.ProtoTCP, 8080},
		Packet{policy.NodeEndpoint("n-web2"), policy.AddrEndpoint(netip.MustParseAddr("fd7a::1")), policy.ProtoICMPv6, 0},
	)
	return out
}
