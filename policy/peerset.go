package policy

import "slices"

// PeerSet is the nodes one node may talk to or hear from: the same nodes as
// Compiled.Peers, kept as one bit per identity class instead of a list of nodes,
// so that the controller can hold one for every connected node of a large tenant
// (an allow-all tenant of n nodes would otherwise hold n² entries).
type PeerSet struct {
	c      *Compiled
	self   int32
	accept []uint64 // classes whose member nodes are peers
}

// PeerSet returns node id's PeerSet, or nil for an unknown node.
func (c *Compiled) PeerSet(id string) *PeerSet {
	i, ok := c.byID[id]
	if !ok {
		return nil
	}
	v := c.viewOf(i)
	ps := &PeerSet{c: c, self: i, accept: make([]uint64, (len(c.classes)+63)/64)}
	c.peerClasses(v, func(x int32) { ps.accept[x/64] |= 1 << (x % 64) })
	return ps
}

// peerClasses calls fn for each class whose member nodes are peers of v's node:
// those that a group with an Accept entry holds, and, where a family's default
// accepts, every class of that family with members that no group singles out. A
// class may come more than once.
func (c *Compiled) peerClasses(v *view, fn func(x int32)) {
	for _, g := range v.groups {
		if g.d.accepts() {
			for _, x := range g.classes {
				fn(x)
			}
		}
	}
	for f := range 2 {
		if !v.any[f].accepts() {
			continue
		}
		for x := range c.classes {
			if c.classes[x].family != uint8(f) || len(c.classes[x].members) == 0 {
				continue
			}
			if _, cand := slices.BinarySearch(v.cands, int32(x)); !cand {
				fn(int32(x))
			}
		}
	}
}

// Has reports whether node id is in the set (never the node itself).
func (ps *PeerSet) Has(id string) bool {
	j, ok := ps.c.byID[id]
	if !ok || j == ps.self {
		return false
	}
	for _, x := range ps.c.memberClasses()[j] {
		if ps.accept[x/64]&(1<<(x%64)) != 0 {
			return true
		}
	}
	return false
}

// memberClasses lists, per node, the classes it is a member of (hosting their
// addresses, its own or routed), made once.
func (c *Compiled) memberClasses() [][]int32 {
	c.memberOnce.Do(func() {
		c.memberOf = make([][]int32, len(c.nodes))
		for x := range c.classes {
			for _, m := range c.classes[x].members {
				c.memberOf[m] = append(c.memberOf[m], int32(x))
			}
		}
	})
	return c.memberOf
}
