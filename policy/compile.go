package policy

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Compiled is a policy compiled against a tenant's nodes. It is immutable and safe
// for concurrent use. Compile does the work shared by all nodes, per rule and per
// identity class; Node and Peers derive one node's part from it on demand, in time
// proportional to that part.
type Compiled struct {
	version   int64
	names     names            // the document's tags, groups and hosts, for tests
	ruleIndex map[string]int32 // rule name → index+1
	rules     []crule
	nodes     []cnode // sorted by ID
	byID      map[string]int32

	// classes are the identity classes, sorted by (family, sides); class i is
	// Identity(i+1).
	classes []class
	// classesOf lists, per rule side and family, the classes whose addresses the
	// side selects (sides that are "*" select everything and are not listed).
	classesOf [][2][]int32
	// starRules lists, per side kind (0 src, 1 dst), the rules whose side is "*".
	starRules [2][]int32
	// world is the class of everything of a family (the class of 0.0.0.0/0, ::/0).
	world [2]int32

	atoms     atoms
	hostOwner map[netip.Addr]int32
	routes    []ownedRoute // sorted by prefix length, longest first, then node
	// prefixes are all remote prefixes, sorted, each with its class's identity.
	prefixes []IdentityPrefix

	// last is the most recent node view: the controller asks for a node's Peers
	// and then for its Node, and they share it.
	last atomic.Pointer[view]

	// memberOf lists each node's classes, for PeerSet.Has; made on first use.
	memberOnce sync.Once
	memberOf   [][]int32
}

// crule is a rule reduced to what the compiler needs.
type crule struct {
	name   string
	id     uint32
	action Verdict
	proto  Protocol
	ports  []PortRange
	all    bool    // ports are "*"
	star   [2]bool // src, dst is "*"
}

func (r *crule) covers(proto uint8) bool {
	switch proto {
	case ProtoTCP, ProtoUDP:
		return r.proto.covers(proto)
	case ProtoICMP, ProtoICMPv6:
		return r.all && r.proto.covers(proto)
	}
	return false
}

// ranges are the port ranges the rule covers for a protocol it covers.
func (r *crule) ranges(proto uint8) []PortRange {
	if proto == ProtoICMP || proto == ProtoICMPv6 {
		return []PortRange{AllPorts}
	}
	return r.ports
}

// class is one identity class: remote addresses of one family that exactly the
// same rule sides select.
type class struct {
	family   uint8
	sides    []int32        // rule sides (2*rule + kind) selecting it, sorted
	prefixes []netip.Prefix // remote prefixes whose addresses are in it, sorted
	members  []int32        // nodes hosting addresses of it (own or routed), sorted
}

type cnode struct {
	Node
	// local are, per family, the classes of the node's own addresses and of the
	// parts of its routes.
	local [2][]int32
	// addr is, per family, the first address (invalid when none).
	addr [2]netip.Addr
	// simple is, per family, whether the node has exactly one address and no
	// route: then its own checks decide exactly.
	simple [2]bool
}

type ownedRoute struct {
	prefix netip.Prefix
	node   int32
}

// atoms are the selectors of the rules once groups and hosts are expanded, each
// with the rule sides that contain it.
type atoms struct {
	tags  map[string][]int32
	names map[string][]int32
	cidrs []cidrAtom
}

type cidrAtom struct {
	prefix netip.Prefix
	sides  []int32
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return 0
	}
	return 1
}

var worldPrefix = [2]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// Compile checks p (Validate), compiles it against nodes and runs the document's
// tests. A policy that is invalid or fails a test is rejected with Errors; nodes
// that contradict each other (a repeated ID or address) are an error too.
func Compile(p *Policy, nodes []Node) (*Compiled, error) {
	if p == nil {
		return nil, fmt.Errorf("compiling policy: no policy")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c, err := build(p, nodes)
	if err != nil {
		return nil, fmt.Errorf("compiling policy version %d: %w", p.Version, err)
	}
	if err := c.Check(p.Tests); err != nil {
		return nil, err
	}
	return c, nil
}

// build compiles a valid policy.
func build(p *Policy, nodes []Node) (*Compiled, error) {
	c := &Compiled{version: p.Version, byID: make(map[string]int32, len(nodes))}
	n := p.names().clone()
	c.names = n
	c.rules = make([]crule, len(p.Rules))
	c.ruleIndex = make(map[string]int32, len(p.Rules))
	for i := range p.Rules {
		r := &p.Rules[i]
		c.ruleIndex[r.Name] = int32(i + 1)
		c.rules[i] = crule{name: r.Name, id: RuleID(r.Name), action: r.Action, proto: r.Proto,
			ports: slices.Clone(r.Ports), all: r.allPorts()}
	}
	c.atoms = expandRules(p, n, c.rules, &c.starRules)

	if err := c.addNodes(nodes); err != nil {
		return nil, err
	}
	c.classify()
	return c, nil
}

// expandRules resolves every rule side into atoms (tags, node names, CIDRs) and
// returns each atom with the sides containing it. Sides with "*" are noted in star.
func expandRules(p *Policy, n names, rules []crule, star *[2][]int32) atoms {
	at := atoms{tags: map[string][]int32{}, names: map[string][]int32{}}
	cidrIndex := map[netip.Prefix]int{}
	memo := map[string][]Selector{}
	for i := range p.Rules {
		for kind, sels := range [2][]Selector{p.Rules[i].Src, p.Rules[i].Dst} {
			side := int32(2*i + kind)
			var leaves []Selector
			for _, s := range sels {
				leaves = append(leaves, n.leaves(s, memo)...)
			}
			if slices.ContainsFunc(leaves, func(s Selector) bool { return s.Kind == SelectAll }) {
				rules[i].star[kind] = true
				star[kind] = append(star[kind], int32(i))
				continue
			}
			seen := map[Selector]bool{}
			for _, s := range leaves {
				s.Loc = Loc{}
				if seen[s] {
					continue
				}
				seen[s] = true
				switch s.Kind {
				case SelectTag:
					at.tags[s.Name] = append(at.tags[s.Name], side)
				case SelectNode:
					at.names[s.Name] = append(at.names[s.Name], side)
				case SelectPrefix:
					j, ok := cidrIndex[s.Prefix]
					if !ok {
						j = len(at.cidrs)
						cidrIndex[s.Prefix] = j
						at.cidrs = append(at.cidrs, cidrAtom{prefix: s.Prefix})
					}
					at.cidrs[j].sides = append(at.cidrs[j].sides, side)
				}
			}
		}
	}
	sort.Slice(at.cidrs, func(i, j int) bool { return prefixLess(at.cidrs[i].prefix, at.cidrs[j].prefix) })
	return at
}

// leaves expands a selector into tags, node names, prefixes and "*": groups into
// their members, hosts into their prefixes. The policy must be valid (no cycles).
func (n names) leaves(s Selector, memo map[string][]Selector) []Selector {
	switch s.Kind {
	case SelectHost:
		return []Selector{{Kind: SelectPrefix, Prefix: n.hosts[s.Name]}}
	case SelectGroup:
		if out, ok := memo[s.Name]; ok {
			return out
		}
		var out []Selector
		seen := map[Selector]bool{}
		for _, m := range n.groups[s.Name].Members {
			for _, l := range n.leaves(m, memo) {
				l.Loc = Loc{}
				if !seen[l] {
					seen[l] = true
					out = append(out, l)
				}
			}
		}
		memo[s.Name] = out
		return out
	}
	return []Selector{s}
}

func prefixLess(a, b netip.Prefix) bool { return comparePrefix(a, b) < 0 }

// comparePrefix orders prefixes by address, then length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// addNodes copies and sorts the nodes and checks that IDs and addresses are unique.
func (c *Compiled) addNodes(nodes []Node) error {
	c.nodes = make([]cnode, len(nodes))
	for i, nd := range nodes {
		nd.Tags = slices.Clone(nd.Tags)
		nd.Addrs = slices.Clone(nd.Addrs)
		nd.Routes = slices.Clone(nd.Routes)
		c.nodes[i] = cnode{Node: nd}
	}
	sort.SliceStable(c.nodes, func(i, j int) bool { return c.nodes[i].ID < c.nodes[j].ID })
	c.hostOwner = make(map[netip.Addr]int32, len(nodes))
	for i := range c.nodes {
		nd := &c.nodes[i]
		if nd.ID == "" {
			return fmt.Errorf("node %q has no ID", nd.Name)
		}
		if _, dup := c.byID[nd.ID]; dup {
			return fmt.Errorf("two nodes have ID %q", nd.ID)
		}
		c.byID[nd.ID] = int32(i)
		for j, a := range nd.Addrs {
			if !a.IsValid() {
				return fmt.Errorf("node %s has an invalid address", nd.ID)
			}
			a = a.Unmap().WithZone("")
			nd.Addrs[j] = a
			if o, dup := c.hostOwner[a]; dup && o != int32(i) {
				return fmt.Errorf("nodes %s and %s both have address %s", c.nodes[o].ID, nd.ID, a)
			}
			c.hostOwner[a] = int32(i)
			f := family(a)
			if !nd.addr[f].IsValid() {
				nd.addr[f] = a
			}
		}
		var routes [2]int
		for j, r := range nd.Routes {
			if !r.IsValid() {
				return fmt.Errorf("node %s has an invalid route", nd.ID)
			}
			r = netip.PrefixFrom(r.Addr().Unmap().WithZone(""), r.Bits()-btoi(r.Addr().Is4In6())*96).Masked()
			nd.Routes[j] = r
			routes[family(r.Addr())]++
			c.routes = append(c.routes, ownedRoute{r, int32(i)})
		}
		for f := range 2 {
			nAddr := 0
			for _, a := range nd.Addrs {
				if family(a) == uint8(f) {
					nAddr++
				}
			}
			nd.simple[f] = nAddr == 1 && routes[f] == 0
		}
	}
	sort.SliceStable(c.routes, func(i, j int) bool {
		a, b := c.routes[i], c.routes[j]
		if a.prefix.Bits() != b.prefix.Bits() {
			return a.prefix.Bits() > b.prefix.Bits()
		}
		return a.node < b.node
	})
	return nil
}

// interner gives each distinct (family, sides) a class.
type interner struct {
	index   map[string]int32
	classes []class
	buf     []byte
}

func (in *interner) intern(f uint8, sides []int32) int32 {
	in.buf = append(in.buf[:0], f)
	for _, s := range sides {
		in.buf = binary.LittleEndian.AppendUint32(in.buf, uint32(s))
	}
	if id, ok := in.index[string(in.buf)]; ok {
		return id
	}
	id := int32(len(in.classes))
	in.index[string(in.buf)] = id
	in.classes = append(in.classes, class{family: f, sides: slices.Clone(sides)})
	return id
}

// sidesBuilder unions sorted side lists.
type sidesBuilder struct{ buf []int32 }

func (b *sidesBuilder) reset() { b.buf = b.buf[:0] }

func (b *sidesBuilder) add(s []int32) { b.buf = append(b.buf, s...) }

func (b *sidesBuilder) result() []int32 {
	slices.Sort(b.buf)
	return slices.Compact(b.buf)
}

// cidrSides adds the sides of every CIDR atom containing the prefix p.
func (c *Compiled) cidrSides(b *sidesBuilder, p netip.Prefix) {
	for i := range c.atoms.cidrs {
		q := c.atoms.cidrs[i].prefix
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			b.add(c.atoms.cidrs[i].sides)
		}
	}
}

// nodeSides adds the sides selecting a node by tag or name.
func (c *Compiled) nodeSides(b *sidesBuilder, tags []string, name string) {
	for _, t := range tags {
		b.add(c.atoms.tags[t])
	}
	b.add(c.atoms.names[name])
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// classify computes every identity class and, for each, its prefixes and members;
// and for each node its local classes.
func (c *Compiled) classify() {
	in := &interner{index: map[string]int32{}}
	var b sidesBuilder
	prefixClass := map[netip.Prefix]int32{}
	nodeSidesCache := map[string][]int32{}
	var keyBuf []byte

	for i := range c.nodes {
		nd := &c.nodes[i]
		// The sides selecting the node itself, shared by nodes alike.
		keyBuf = keyBuf[:0]
		tags := slices.Clone(nd.Tags)
		slices.Sort(tags)
		tags = slices.Compact(tags)
		for _, t := range tags {
			if c.atoms.tags[t] != nil {
				keyBuf = append(append(keyBuf, t...), ',')
			}
		}
		if c.atoms.names[nd.Name] != nil {
			keyBuf = append(append(keyBuf, '@'), nd.Name...)
		}
		own, ok := nodeSidesCache[string(keyBuf)]
		if !ok {
			b.reset()
			c.nodeSides(&b, tags, nd.Name)
			own = slices.Clone(b.result())
			nodeSidesCache[string(keyBuf)] = own
		}
		for _, a := range nd.Addrs {
			p := hostPrefix(a)
			b.reset()
			b.add(own)
			c.cidrSides(&b, p)
			id := in.intern(family(a), b.result())
			prefixClass[p] = id
			nd.local[family(a)] = append(nd.local[family(a)], id)
		}
	}
	classOfPrefix := func(p netip.Prefix) int32 {
		b.reset()
		c.cidrSides(&b, p)
		return in.intern(family(p.Addr()), b.result())
	}
	addPrefix := func(p netip.Prefix) int32 {
		if id, ok := prefixClass[p]; ok {
			return id
		}
		id := classOfPrefix(p)
		prefixClass[p] = id
		return id
	}
	for i := range c.nodes {
		nd := &c.nodes[i]
		for _, r := range nd.Routes {
			f := family(r.Addr())
			nd.local[f] = append(nd.local[f], c.routeClasses(r, addPrefix, classOfPrefix)...)
		}
	}
	for _, a := range c.atoms.cidrs {
		addPrefix(a.prefix)
	}
	for f := range 2 {
		c.world[f] = classOfPrefix(worldPrefix[f])
	}

	// Number classes in a deterministic order: by family, then sides.
	order := make([]int32, len(in.classes))
	for i := range order {
		order[i] = int32(i)
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := &in.classes[order[i]], &in.classes[order[j]]
		if a.family != b.family {
			return a.family < b.family
		}
		return slices.Compare(a.sides, b.sides) < 0
	})
	renum := make([]int32, len(order))
	c.classes = make([]class, len(order))
	for newID, old := range order {
		renum[old] = int32(newID)
		c.classes[newID] = in.classes[old]
	}
	c.prefixes = make([]IdentityPrefix, 0, len(prefixClass))
	for p, id := range prefixClass {
		cl := &c.classes[renum[id]]
		cl.prefixes = append(cl.prefixes, p)
		c.prefixes = append(c.prefixes, IdentityPrefix{Prefix: p, Identity: ident(renum[id])})
	}
	slices.SortFunc(c.prefixes, func(a, b IdentityPrefix) int { return comparePrefix(a.Prefix, b.Prefix) })
	for f := range 2 {
		c.world[f] = renum[c.world[f]]
	}
	c.classesOf = make([][2][]int32, 2*len(c.rules))
	for id := range c.classes {
		cl := &c.classes[id]
		sort.Slice(cl.prefixes, func(i, j int) bool { return prefixLess(cl.prefixes[i], cl.prefixes[j]) })
		for _, s := range cl.sides {
			c.classesOf[s][cl.family] = append(c.classesOf[s][cl.family], int32(id))
		}
	}
	for i := range c.nodes {
		nd := &c.nodes[i]
		for f := range 2 {
			for j, id := range nd.local[f] {
				nd.local[f][j] = renum[id]
			}
			slices.Sort(nd.local[f])
			nd.local[f] = slices.Compact(nd.local[f])
			for _, id := range nd.local[f] {
				c.classes[id].members = append(c.classes[id].members, int32(i))
			}
		}
	}
}

// routeClasses records the route r as a remote prefix and returns the classes of
// the addresses in it: the route's own and those of CIDRs of the rules inside it.
// Each part of the route is found through one address in it (its start, or just
// past a CIDR inside it), so a class that no address of the route has is left out.
func (c *Compiled) routeClasses(r netip.Prefix, addPrefix, classOf func(netip.Prefix) int32) []int32 {
	addPrefix(r)
	points := []netip.Addr{r.Addr()}
	for _, a := range c.atoms.cidrs {
		q := a.prefix
		if q.Bits() > r.Bits() && r.Contains(q.Addr()) {
			points = append(points, q.Addr())
			if next := lastAddr(q).Next(); next.IsValid() && r.Contains(next) {
				points = append(points, next)
			}
		}
	}
	out := make([]int32, 0, len(points))
	for _, pt := range points {
		out = append(out, classOf(hostPrefix(pt)))
	}
	return out
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		for j := 7; j >= 0; j-- {
			if i*8+(7-j) >= bits {
				a[i] |= 1 << j
			}
		}
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}
