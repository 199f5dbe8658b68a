package state

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cvlan/cvlan/controlplane/ipam"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// CreateNode registers a node by hand in n.NetworkID and gives it addresses.
func (s *State) CreateNode(ctx context.Context, actor Actor, n model.Node) (*model.Node, error) {
	n.ID = model.NewID(model.PrefixNode)
	if n.Kind == "" {
		n.Kind = model.KindAgent
	}
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(n.TenantID)
		if err != nil {
			return err
		}
		return addNode(tx, t, &n)
	})
	return &n, err
}

// addNode validates n, allocates its addresses and queues its insertion.
func addNode(tx *txn, t *Tenant, n *model.Node) error {
	nw := t.Networks.ByID(n.NetworkID)
	if nw == nil {
		return model.Errorf(model.NotFound, "network", "network %q not found", n.NetworkID)
	}
	n.CreatedAt = tx.now
	n.Tags = nonNil(n.Tags)
	n.Routes = nonNil(n.Routes)
	n.Endpoints = nonNil(n.Endpoints)
	if err := validateNode(tx.w, t, n); err != nil {
		return err
	}
	hint := t.next[nw.ID]
	v4, ok := ipam.Allocate(nw.IPv4, func(a netip.Addr) bool { return t.AddrInUse(nw.ID, a) }, hint)
	if !ok {
		return model.Errorf(model.Exhausted, "network", "network %q (%s) has no free addresses", nw.Name, nw.IPv4)
	}
	n.IPv4, n.IPv6 = v4, ipam.Pair(nw.IPv4, v4, nw.IPv6)
	t.setAddrs(nw.ID, n.ID, []netip.Addr{n.IPv4, n.IPv6}, nil)
	t.next[nw.ID] = v4.Next()
	t.Nodes = t.Nodes.with(n)
	tx.nodes = append(tx.nodes, NodeChange{New: n})
	insert(tx, nodesT, n, n.TenantID, "node", n.ID, fmt.Sprintf("%s %s in %s", n.Name, n.IPv4, nw.Name))
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// validateNode checks n within its tenant; keys must be unique controller-wide, as
// an agent is identified by its machine key before its tenant is known.
func validateNode(w *World, t *Tenant, n *model.Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	if o := t.Nodes.ByKey(n.Name); o != nil && o.ID != n.ID {
		return model.Errorf(model.Conflict, "name", "a node named %q exists in tenant %q", n.Name, t.Name)
	}
	if n.MachineKey.IsZero() && n.NodeKey.IsZero() {
		return nil
	}
	for _, ot := range w.tenants {
		for _, o := range ot.Nodes.All() {
			if o.ID == n.ID {
				continue
			}
			// Name the other node only inside the same tenant.
			owner := "another node"
			if ot.ID == t.ID {
				owner = fmt.Sprintf("node %q", o.Name)
			}
			if !n.MachineKey.IsZero() && o.MachineKey.Equal(n.MachineKey) {
				return model.Errorf(model.Conflict, "machine_key", "machine key is already enrolled as %s", owner)
			}
			if !n.NodeKey.IsZero() && o.NodeKey.Equal(n.NodeKey) {
				return model.Errorf(model.Conflict, "node_key", "node key is already used by %s", owner)
			}
		}
	}
	return nil
}

// UpdateNode changes a node's name, tags, routes or node key through fn. Its
// network, addresses and machine key cannot change.
func (s *State) UpdateNode(ctx context.Context, actor Actor, tenantID, id string, fn func(*model.Node) error) (*model.Node, error) {
	var out *model.Node
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		cur := t.Nodes.ByID(id)
		if cur == nil {
			return model.NotFoundf("node", id)
		}
		n, err := patched(cur, fn)
		if err != nil {
			return err
		}
		n.ID, n.TenantID, n.NetworkID, n.CreatedAt = cur.ID, cur.TenantID, cur.NetworkID, cur.CreatedAt
		n.IPv4, n.IPv6, n.MachineKey = cur.IPv4, cur.IPv6, cur.MachineKey
		n.Tags, n.Routes, n.Endpoints = nonNil(n.Tags), nonNil(n.Routes), nonNil(n.Endpoints)
		if err := validateNode(tx.w, t, n); err != nil {
			return err
		}
		t.Nodes = t.Nodes.with(n)
		tx.nodes = append(tx.nodes, NodeChange{Old: cur, New: n})
		update(tx, nodesT, n, tenantID, "node", n.ID, n.Name)
		out = n
		return nil
	})
	return out, err
}

// DeleteNode removes a node; its addresses return to the pool.
func (s *State) DeleteNode(ctx context.Context, actor Actor, tenantID, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		n := t.Nodes.ByID(id)
		if n == nil {
			return model.NotFoundf("node", id)
		}
		for _, site := range t.Sites.All() {
			if site.VRouterNodeID == id {
				return model.Errorf(model.Conflict, "node", "node %q terminates IPsec site %q; delete the site first", n.Name, site.Name)
			}
		}
		t.Nodes = t.Nodes.without(id)
		tx.nodes = append(tx.nodes, NodeChange{Old: n})
		t.setAddrs(n.NetworkID, id, nil, []netip.Addr{n.IPv4, n.IPv6})
		remove(tx, nodesT, tenantID, "node", id, n.Name)
		return nil
	})
}

// Enrollment is what a machine presents to join.
type Enrollment struct {
	Secret     string // the enrollment key's secret
	Name       string // wanted node name; made unique by a suffix if taken
	MachineKey key.MachinePublic
	NodeKey    key.NodePublic
}

// Enroll checks an enrollment key and creates the node it admits, with the key's
// network, tags and ephemerality, counting one use of the key.
func (s *State) Enroll(ctx context.Context, e Enrollment) (*model.Node, *model.Network, error) {
	if e.MachineKey.IsZero() {
		return nil, nil, model.Errorf(model.Invalid, "machine_key", "required")
	}
	if e.NodeKey.IsZero() {
		return nil, nil, model.Errorf(model.Invalid, "node_key", "required")
	}
	var node *model.Node
	var nw *model.Network
	keyID, _ := model.SecretID(e.Secret)
	err := s.write(ctx, Actor("enroll:"+keyID), func(tx *txn) error {
		k, t := findKey(tx.w, e.Secret)
		if k == nil {
			return model.Errorf(model.Unauthenticated, "key", "unknown enrollment key")
		}
		if err := k.UsableAt(tx.now); err != nil {
			return err
		}
		t = tx.tenant(t.ID)
		nw = t.Networks.ByID(k.NetworkID)
		n := &model.Node{
			ID: model.NewID(model.PrefixNode), TenantID: t.ID, NetworkID: k.NetworkID,
			Name: uniqueName(t, e.Name), Kind: model.KindAgent, Tags: slices.Clone(k.Tags),
			MachineKey: e.MachineKey, NodeKey: e.NodeKey, Ephemeral: k.Ephemeral,
		}
		if err := addNode(tx, t, n); err != nil {
			return err
		}
		used := *k
		used.Uses++
		t.Keys = t.Keys.with(&used)
		tx.op(func(ctx context.Context, stx store.Tx) error { return stx.EnrollmentKeys().Update(ctx, &used) })
		node = n
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return node, nw, nil
}

func findKey(w *World, secret string) (*model.EnrollmentKey, *Tenant) {
	id, ok := model.SecretID(secret)
	if !ok {
		return nil, nil
	}
	for _, t := range w.tenants {
		if k := t.Keys.ByID(id); k != nil && model.SecretMatches(secret, k.Hash) {
			return k, t
		}
	}
	return nil, nil
}

// uniqueName returns want, or want-2, want-3, ... if taken. An invalid wanted name
// becomes "node".
func uniqueName(t *Tenant, want string) string {
	want = strings.ToLower(want)
	if model.ValidateName("name", want) != nil {
		want = "node"
	}
	name := want
	for i := 2; t.Nodes.ByKey(name) != nil; i++ {
		suffix := fmt.Sprintf("-%d", i)
		name = want[:min(len(want), 63-len(suffix))] + suffix
	}
	return name
}
