package policy

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// protos are the IP protocols rule entries are compiled for.
var protos = [4]uint8{ProtoICMP, ProtoTCP, ProtoUDP, ProtoICMPv6}

// span is one decided port range of one protocol; rule indexes c.rules.
type span struct {
	lo, hi  uint16
	verdict Verdict
	rule    int32
}

// decision is, per direction and protocol, the decided ranges for one remote.
type decision [2][4][]span

func (d *decision) accepts() bool {
	for dir := range d {
		for _, spans := range d[dir] {
			for _, s := range spans {
				if s.verdict == Accept {
					return true
				}
			}
		}
	}
	return false
}

func (d *decision) empty() bool {
	for dir := range d {
		for _, spans := range d[dir] {
			if len(spans) > 0 {
				return false
			}
		}
	}
	return true
}

func (d *decision) equal(e *decision) bool {
	for dir := range d {
		for p := range d[dir] {
			if !slices.Equal(d[dir][p], e[dir][p]) {
				return false
			}
		}
	}
	return true
}

// localKind is the rule side that selects the node itself: dst on ingress, src on
// egress.
func localKind(dir Direction) int32 {
	if dir == Ingress {
		return 1
	}
	return 0
}

// relevant returns the rules, in document order, whose local side selects the
// class with the given sides.
func (c *Compiled) relevant(sides []int32, dir Direction) []int32 {
	k := localKind(dir)
	var own []int32
	for _, s := range sides {
		if s&1 == k {
			own = append(own, s>>1)
		}
	}
	return mergeSorted(own, c.starRules[k])
}

func mergeSorted(a, b []int32) []int32 {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]int32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// remoteSide is the side of rule r that selects the remote.
func remoteSide(r int32, dir Direction) int32 {
	return 2*r + 1 - localKind(dir)
}

// view is one node's part of the compiled policy: the remote classes that some
// rule relevant to the node singles out (candidates), grouped by the rules that
// single them out, each group decided once; and what every other remote gets.
type view struct {
	node   int32
	cands  []int32 // candidate classes, ascending
	groups []group
	any    [2]decision // per family: what a remote no rule singles out gets
	shared bool        // any[0] equals any[1]: IdentityAny entries serve both
}

type group struct {
	rep     int32   // the class whose identity the group's prefixes map to
	classes []int32 // ascending
	d       decision
}

// view computes node i's part. Its cost is proportional to the rules relevant to
// the node times the classes they single out, never to the number of nodes.
func (c *Compiled) view(i int32) *view {
	nd := &c.nodes[i]
	v := &view{node: i}
	var rs resolver
	// The node's local classes that the same rules select behave alike: each
	// distinct list of relevant rules (per direction) is one "local", split into the
	// rules whose remote side is "*" and the others.
	type local struct{ any, spec []int32 }
	var locals [2][]local
	var famLocals [2][2][]int32 // per direction and family: the node's locals
	for dir := Ingress; dir <= Egress; dir++ {
		index := map[string]int32{}
		for f := range 2 {
			for _, l := range nd.local[f] {
				rel := c.relevant(c.classes[l].sides, dir)
				key := int32Key(nil, rel)
				id, ok := index[string(key)]
				if !ok {
					id = int32(len(locals[dir]))
					index[string(key)] = id
					var lo local
					for _, r := range rel {
						if c.rules[r].star[1-localKind(dir)] {
							lo.any = append(lo.any, r)
						} else {
							lo.spec = append(lo.spec, r)
						}
					}
					locals[dir] = append(locals[dir], lo)
				}
				famLocals[dir][f] = append(famLocals[dir][f], id)
			}
			slices.Sort(famLocals[dir][f])
			famLocals[dir][f] = slices.Compact(famLocals[dir][f])
		}
	}
	lists := make([][]int32, 0, 4)
	for f := range 2 {
		for dir := Ingress; dir <= Egress; dir++ {
			lists = lists[:0]
			for _, id := range famLocals[dir][f] {
				lists = append(lists, locals[dir][id].any)
			}
			for p, proto := range protos {
				v.any[f][dir][p] = rs.resolve(c.rules, lists, proto)
			}
		}
	}
	v.shared = v.any[0].equal(&v.any[1])

	// Lay out, per candidate class, the (direction, local, rule) tokens that single
	// it out, in that order.
	count := make([]int32, len(c.classes)+1)
	each := func(fn func(tok uint64, classes []int32)) {
		for dir := Ingress; dir <= Egress; dir++ {
			for f := range 2 {
				for _, id := range famLocals[dir][f] {
					for _, r := range locals[dir][id].spec {
						fn(uint64(dir)<<62|uint64(id)<<32|uint64(r), c.classesOf[remoteSide(r, dir)][f])
					}
				}
			}
		}
	}
	each(func(_ uint64, xs []int32) {
		for _, x := range xs {
			count[x+1]++
		}
	})
	for x := range c.classes {
		if count[x+1] > 0 {
			v.cands = append(v.cands, int32(x))
		}
		count[x+1] += count[x] // now count[x] is where x's tokens start
	}
	tokens := make([]uint64, count[len(c.classes)])
	fill := slices.Clone(count)
	each(func(tok uint64, xs []int32) {
		for _, x := range xs {
			tokens[fill[x]] = tok
			fill[x]++
		}
	})

	// Candidates singled out by the same rules against the same locals are
	// decided alike: decide each such set once. Sets decided alike share a group.
	var famKey [2][]byte
	for f := range 2 {
		famKey[f] = int32Key(int32Key(nil, famLocals[0][f]), famLocals[1][f])
	}
	byRules := map[string]int{}
	byDecision := map[string]int{}
	var key []byte
	for _, x := range v.cands {
		f := c.classes[x].family
		toks := tokens[count[x]:count[x+1]]
		key = append(key[:0], famKey[f]...)
		for _, t := range toks {
			key = binary.LittleEndian.AppendUint64(key, t)
		}
		if g, ok := byRules[string(key)]; ok {
			v.groups[g].classes = append(v.groups[g].classes, x)
			continue
		}
		var d decision
		for dir := Ingress; dir <= Egress; dir++ {
			lists = lists[:0]
			var covered [4]bool
			for _, id := range famLocals[dir][f] {
				var spec []int32
				for _, t := range toks {
					if Direction(t>>62) == dir && int32(t>>32&0x3fffffff) == id {
						r := int32(t)
						spec = append(spec, r)
						for p, proto := range protos {
							covered[p] = covered[p] || c.rules[r].covers(proto)
						}
					}
				}
				lists = append(lists, mergeSorted(locals[dir][id].any, spec))
			}
			for p, proto := range protos {
				if covered[p] {
					d[dir][p] = rs.resolve(c.rules, lists, proto)
				} else {
					d[dir][p] = v.any[f][dir][p] // no rule singles it out: what everyone gets
				}
			}
		}
		dkey := d.key()
		g, ok := byDecision[dkey]
		if !ok {
			g = len(v.groups)
			byDecision[dkey] = g
			v.groups = append(v.groups, group{rep: x, d: d})
		}
		byRules[string(key)] = g
		v.groups[g].classes = append(v.groups[g].classes, x)
	}
	for g := range v.groups {
		slices.Sort(v.groups[g].classes)
	}
	return v
}

func int32Key(b []byte, s []int32) []byte {
	for _, x := range s {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return append(b, 0xff, 0xff, 0xff, 0xff)
}

// key serializes a decision, to find remotes decided alike.
func (d *decision) key() string {
	var b []byte
	for dir := range d {
		for _, spans := range d[dir] {
			for _, s := range spans {
				b = binary.LittleEndian.AppendUint16(b, s.lo)
				b = binary.LittleEndian.AppendUint16(b, s.hi)
				b = append(b, byte(s.verdict))
				b = binary.LittleEndian.AppendUint32(b, uint32(s.rule))
			}
			b = append(b, 0xfe)
		}
	}
	return string(b)
}

// worldEntries reports whether family f needs its world prefix with its own
// entries: when the families' defaults differ and f's is not empty, and no group
// already covers the family's world class.
func (v *view) worldEntries(c *Compiled, f int) bool {
	if v.shared || v.any[f].empty() {
		return false
	}
	_, cand := slices.BinarySearch(v.cands, c.world[f])
	return !cand
}

// viewOf returns node i's view, reusing the last one computed.
func (c *Compiled) viewOf(i int32) *view {
	if v := c.last.Load(); v != nil && v.node == i {
		return v
	}
	v := c.view(i)
	c.last.Store(v)
	return v
}

func ident(class int32) Identity { return Identity(class + 1) }

// Has reports whether node id was among the nodes compiled, cheaply.
func (c *Compiled) Has(id string) bool {
	_, ok := c.byID[id]
	return ok
}

// Node returns the compiled policy of the node with ID id, or nil if there is no
// such node. Each call builds a new NodePolicy, which the caller owns.
func (c *Compiled) Node(id string) *NodePolicy {
	i, ok := c.byID[id]
	if !ok {
		return nil
	}
	return c.nodePolicy(c.viewOf(i))
}

func (c *Compiled) nodePolicy(v *view) *NodePolicy {
	np := &NodePolicy{Version: c.version, RuleNames: map[uint32]string{}}
	type item struct {
		id Identity
		d  *decision
	}
	items := make([]item, 0, len(v.groups)+2)
	var worlds []IdentityPrefix
	nPrefixes, nRules := 0, 0
	for g := range v.groups {
		items = append(items, item{ident(v.groups[g].rep), &v.groups[g].d})
		for _, x := range v.groups[g].classes {
			nPrefixes += len(c.classes[x].prefixes)
		}
	}
	if v.shared {
		items = append(items, item{IdentityAny, &v.any[0]})
	} else {
		for f := range 2 {
			if v.worldEntries(c, f) {
				items = append(items, item{ident(c.world[f]), &v.any[f]})
				worlds = append(worlds, IdentityPrefix{Prefix: worldPrefix[f], Identity: ident(c.world[f])})
			}
		}
	}
	slices.SortFunc(items, func(a, b item) int { return cmp.Compare(a.id, b.id) })
	for _, it := range items {
		for dir := range it.d {
			for _, spans := range it.d[dir] {
				nRules += len(spans)
			}
		}
	}
	// Entries come out sorted: by direction, identity, protocol (protos is
	// ascending) and port.
	np.Rules = make([]RuleEntry, 0, nRules)
	for dir := Ingress; dir <= Egress; dir++ {
		for _, it := range items {
			for p, spans := range it.d[dir] {
				for _, s := range spans {
					r := &c.rules[s.rule]
					np.Rules = append(np.Rules, RuleEntry{Direction: dir, Identity: it.id, Proto: protos[p],
						PortLo: s.lo, PortHi: s.hi, Verdict: s.verdict, RuleID: r.id})
					np.RuleNames[r.id] = r.name
				}
			}
		}
	}
	np.Prefixes = make([]IdentityPrefix, 0, nPrefixes+len(worlds))
	if nPrefixes > len(c.prefixes)/8 {
		// Most prefixes are in: filter the sorted list rather than sort.
		rep := make([]int32, len(c.classes))
		for g := range v.groups {
			for _, x := range v.groups[g].classes {
				rep[x] = v.groups[g].rep + 1
			}
		}
		for _, p := range c.prefixes {
			if r := rep[p.Identity-1]; r > 0 {
				np.Prefixes = append(np.Prefixes, IdentityPrefix{Prefix: p.Prefix, Identity: ident(r - 1)})
			}
		}
	} else {
		for _, g := range v.groups {
			for _, x := range g.classes {
				for _, p := range c.classes[x].prefixes {
					np.Prefixes = append(np.Prefixes, IdentityPrefix{Prefix: p, Identity: ident(g.rep)})
				}
			}
		}
		slices.SortFunc(np.Prefixes, func(a, b IdentityPrefix) int { return comparePrefix(a.Prefix, b.Prefix) })
	}
	for _, w := range worlds {
		i, _ := slices.BinarySearchFunc(np.Prefixes, w, func(a, b IdentityPrefix) int { return comparePrefix(a.Prefix, b.Prefix) })
		np.Prefixes = slices.Insert(np.Prefixes, i, w)
	}
	return np
}

// Peers returns the IDs of the nodes that node id may talk to or hear from, sorted:
// those hosting an address (their own or in a route they advertise) that has an
// Accept entry in the node's policy in either direction. It is nil for an unknown
// node. The controller gives each node only these WireGuard peers.
func (c *Compiled) Peers(id string) []string {
	i, ok := c.byID[id]
	if !ok {
		return nil
	}
	return c.peers(c.viewOf(i))
}

func (c *Compiled) peers(v *view) []string {
	mark := make([]bool, len(c.nodes))
	c.peerClasses(v, func(x int32) {
		for _, m := range c.classes[x].members {
			mark[m] = true
		}
	})
	mark[v.node] = false
	var out []string
	for m, ok := range mark {
		if ok {
			out = append(out, c.nodes[m].ID)
		}
	}
	return out
}

// resolver decides port ranges; it keeps its buffers between calls.
type resolver struct {
	bounds           []uint32
	acc, den         []int32
	bestAcc, bestDen []int32
	nextAcc, nextDen []int32
}

// resolve decides, for one protocol, the ranges of a remote against the rules in
// lists (one list per local class, each in document order). Within one local
// class a deny rule overrides accept rules, and the first rule of each kind in
// document order is the deciding one; across local classes (a node that routes
// subnets has several) a range is accepted if any accepts it, by the first such
// rule, otherwise denied by the first deny rule of any. Ranges no rule covers are
// left out (default deny).
func (rs *resolver) resolve(rules []crule, lists [][]int32, proto uint8) []span {
	b := rs.bounds[:0]
	for _, l := range lists {
		for _, r := range l {
			cr := &rules[r]
			if !cr.covers(proto) {
				continue
			}
			for _, pr := range cr.ranges(proto) {
				b = append(b, uint32(pr.Lo), uint32(pr.Hi)+1)
			}
		}
	}
	if len(b) == 0 {
		rs.bounds = b
		return nil
	}
	slices.Sort(b)
	b = slices.Compact(b)
	rs.bounds = b
	n := len(b) - 1
	rs.bestAcc = fillN(rs.bestAcc, n, -1)
	rs.bestDen = fillN(rs.bestDen, n, -1)
	for _, l := range lists {
		rs.acc = fillN(rs.acc, n, -1)
		rs.den = fillN(rs.den, n, -1)
		rs.nextAcc = iota32(rs.nextAcc, n+1)
		rs.nextDen = iota32(rs.nextDen, n+1)
		for _, r := range l {
			cr := &rules[r]
			if !cr.covers(proto) {
				continue
			}
			val, next := rs.acc, rs.nextAcc
			if cr.action == Deny {
				val, next = rs.den, rs.nextDen
			}
			for _, pr := range cr.ranges(proto) {
				lo, _ := slices.BinarySearch(b, uint32(pr.Lo))
				hi, _ := slices.BinarySearch(b, uint32(pr.Hi)+1)
				for k := find(next, lo); k < hi; k = find(next, k+1) {
					val[k] = r
					next[k] = int32(k + 1)
				}
			}
		}
		for k := range n {
			if a := rs.acc[k]; a >= 0 && rs.den[k] < 0 && (rs.bestAcc[k] < 0 || a < rs.bestAcc[k]) {
				rs.bestAcc[k] = a
			}
			if d := rs.den[k]; d >= 0 && (rs.bestDen[k] < 0 || d < rs.bestDen[k]) {
				rs.bestDen[k] = d
			}
		}
	}
	var out []span
	for k := range n {
		s := span{lo: uint16(b[k]), hi: uint16(b[k+1] - 1)}
		switch {
		case rs.bestAcc[k] >= 0:
			s.verdict, s.rule = Accept, rs.bestAcc[k]
		case rs.bestDen[k] >= 0:
			s.verdict, s.rule = Deny, rs.bestDen[k]
		default:
			continue
		}
		if last := len(out) - 1; last >= 0 && out[last].hi+1 == s.lo && out[last].verdict == s.verdict && out[last].rule == s.rule {
			out[last].hi = s.hi
			continue
		}
		out = append(out, s)
	}
	return out
}

// find returns the first index >= k that is not yet painted.
func find(next []int32, k int) int {
	for int(next[k]) != k {
		next[k] = next[next[k]]
		k = int(next[k])
	}
	return k
}

func fillN(s []int32, n int, v int32) []int32 {
	s = slices.Grow(s[:0], n)[:n]
	for i := range s {
		s[i] = v
	}
	return s
}

func iota32(s []int32, n int) []int32 {
	s = slices.Grow(s[:0], n)[:n]
	for i := range s {
		s[i] = int32(i)
	}
	return s
}
