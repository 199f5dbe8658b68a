// Package state is the controller's in-memory truth: an immutable World of per-tenant
// copy-on-write snapshots, read lock-free by every request through an atomic pointer,
// and changed by exactly one writer at a time, which validates a change against the
// current snapshot, persists it (with its audit entry) in one store transaction, and
// only then publishes the new snapshot. Reads never touch the database; a change the
// database refuses is never published.
package state

import (
	"net/netip"

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// World is one immutable snapshot of everything. Never modify what it returns.
type World struct {
	Tenants Coll[model.Tenant]
	Relays  Coll[model.Relay]
	Tokens  Coll[model.Token]
	tenants map[string]*Tenant // by tenant ID
}

// Tenant is one tenant's immutable snapshot.
type Tenant struct {
	*model.Tenant
	Networks Coll[model.Network]
	Nodes    Coll[model.Node]
	Keys     Coll[model.EnrollmentKey] // ordered by ID
	Sites    Coll[model.IPsecSite]
	Policy   *model.Policy // latest version; nil if never set
	// addrs maps each network ID to the overlay addresses in use there.
	addrs map[string]map[netip.Addr]string
	// next is each network's IPAM hint: where the next search starts.
	next map[string]netip.Addr
}

func byName[T interface{ *model.Tenant | *model.Relay }](v T) string {
	switch v := any(v).(type) {
	case *model.Tenant:
		return v.Name
	case *model.Relay:
		return v.Name
	}
	return ""
}

func emptyWorld() *World {
	return &World{
		Tenants: newColl(func(t *model.Tenant) string { return t.ID }, byName[*model.Tenant]),
		Relays:  newColl(func(r *model.Relay) string { return r.ID }, byName[*model.Relay]),
		Tokens:  newColl(func(t *model.Token) string { return t.ID }, func(t *model.Token) string { return t.ID }),
		tenants: map[string]*Tenant{},
	}
}

func newTenant(t *model.Tenant) *Tenant {
	return &Tenant{
		Tenant:   t,
		Networks: newColl(func(n *model.Network) string { return n.ID }, func(n *model.Network) string { return n.Name }),
		Nodes:    newColl(func(n *model.Node) string { return n.ID }, func(n *model.Node) string { return n.Name }),
		Keys:     newColl(func(k *model.EnrollmentKey) string { return k.ID }, func(k *model.EnrollmentKey) string { return k.ID }),
		Sites:    newColl(func(s *model.IPsecSite) string { return s.ID }, func(s *model.IPsecSite) string { return s.Name }),
		addrs:    map[string]map[netip.Addr]string{},
		next:     map[string]netip.Addr{},
	}
}

// Tenant returns the tenant with the given ID or name, or nil.
func (w *World) Tenant(ref string) *Tenant {
	if model.IsID(ref) {
		return w.tenants[ref]
	}
	if t := w.Tenants.ByKey(ref); t != nil {
		return w.tenants[t.ID]
	}
	return nil
}

// Relay returns the relay with the given ID or name, or nil.
func (w *World) Relay(ref string) *model.Relay { return lookup(w.Relays, ref) }

// Network returns the network with the given ID or name, or nil.
func (t *Tenant) Network(ref string) *model.Network { return lookup(t.Networks, ref) }

// Node returns the node with the given ID or name, or nil.
func (t *Tenant) Node(ref string) *model.Node { return lookup(t.Nodes, ref) }

// Site returns the IPsec site with the given ID or name, or nil.
func (t *Tenant) Site(ref string) *model.IPsecSite { return lookup(t.Sites, ref) }

func lookup[T any](c Coll[T], ref string) *T {
	if model.IsID(ref) {
		return c.ByID(ref)
	}
	return c.ByKey(ref)
}

// AddrInUse reports whether addr is held by a node of the network.
func (t *Tenant) AddrInUse(networkID string, addr netip.Addr) bool {
	_, ok := t.addrs[networkID][addr]
	return ok
}

// Counts returns the number of objects of each kind across all tenants.
func (w *World) Counts() map[string]int {
	c := map[string]int{"tenant": w.Tenants.Len(), "relay": w.Relays.Len(), "token": w.Tokens.Len()}
	for _, t := range w.tenants {
		c["network"] += t.Networks.Len()
		c["node"] += t.Nodes.Len()
		c["enrollment_key"] += t.Keys.Len()
		c["ipsec_site"] += t.Sites.Len()
		if t.Policy != nil {
			c["policy"]++
		}
	}
	return c
}

// build turns a store dump into a World.
func build(d *store.Dump) *World {
	w := emptyWorld()
	w.Tenants = w.Tenants.withAll(ptrs(d.Tenants))
	w.Relays = w.Relays.withAll(ptrs(d.Relays))
	w.Tokens = w.Tokens.withAll(ptrs(d.Tokens))
	for _, t := range w.Tenants.All() {
		w.tenants[t.ID] = newTenant(t)
	}
	for tid, ns := range groupBy(d.Networks, func(n *model.Network) string { return n.TenantID }) {
		if t := w.tenants[tid]; t != nil {
			t.Networks = t.Networks.withAll(ns)
			for _, n := range ns {
				t.addrs[n.ID] = map[netip.Addr]string{}
			}
		}
	}
	for tid, ns := range groupBy(d.Nodes, func(n *model.Node) string { return n.TenantID }) {
		t := w.tenants[tid]
		if t == nil {
			continue
		}
		t.Nodes = t.Nodes.withAll(ns)
		for _, n := range ns {
			for _, a := range []netip.Addr{n.IPv4, n.IPv6} {
				if a.IsValid() && t.addrs[n.NetworkID] != nil {
					t.addrs[n.NetworkID][a] = n.ID
				}
			}
		}
	}
	for tid, ks := range groupBy(d.EnrollmentKeys, func(k *model.EnrollmentKey) string { return k.TenantID }) {
		if t := w.tenants[tid]; t != nil {
			t.Keys = t.Keys.withAll(ks)
		}
	}
	for tid, ss := range groupBy(d.Sites, func(s *model.IPsecSite) string { return s.TenantID }) {
		if t := w.tenants[tid]; t != nil {
			t.Sites = t.Sites.withAll(ss)
		}
	}
	for i := range d.Policies {
		p := &d.Policies[i]
		if t := w.tenants[p.TenantID]; t != nil {
			t.Policy = p
		}
	}
	return w
}

func ptrs[T any](vs []T) []*T {
	out := make([]*T, len(vs))
	for i := range vs {
		out[i] = &vs[i]
	}
	return out
}

func groupBy[T any](vs []T, key func(*T) string) map[string][]*T {
	out := map[string][]*T{}
	for i := range vs {
		k := key(&vs[i])
		out[k] = append(out[k], &vs[i])
	}
	return out
}
