package state

import (
	"context"
	"net/netip"

	"github.com/cvlan/cvlan/controlplane/model"
)

// CreateNetwork adds a network to a tenant. Its ranges must not overlap another
// network of the same tenant.
func (s *State) CreateNetwork(ctx context.Context, actor Actor, n model.Network) (*model.Network, error) {
	n.ID = model.NewID(model.PrefixNetwork)
	if n.MTU == 0 {
		n.MTU = model.DefaultMTU
	}
	err := s.write(ctx, actor, func(tx *txn) error {
		t := tx.tenant(n.TenantID)
		if t == nil {
			return model.NotFoundf("tenant", n.TenantID)
		}
		if err := validateNetwork(t, &n); err != nil {
			return err
		}
		n.CreatedAt = tx.now
		t.Networks = t.Networks.with(&n)
		t.addrs[n.ID] = map[netip.Addr]string{}
		insert(tx, networksT, &n, n.TenantID, "network", n.ID, n.Name+" "+n.IPv4.String())
		return nil
	})
	return &n, err
}

func validateNetwork(t *Tenant, n *model.Network) error {
	if err := n.Validate(); err != nil {
		return err
	}
	if o := t.Networks.ByKey(n.Name); o != nil && o.ID != n.ID {
		return model.Errorf(model.Conflict, "name", "a network named %q exists in tenant %q", n.Name, t.Name)
	}
	for _, o := range t.Networks.All() {
		if o.ID == n.ID || !n.Overlaps(o) {
			continue
		}
		field, mine, theirs := "ipv4", n.IPv4, o.IPv4
		if !n.IPv4.Overlaps(o.IPv4) {
			field, mine, theirs = "ipv6", n.IPv6, o.IPv6
		}
		return model.Errorf(model.Conflict, field, "%s overlaps %s of network %q", mine, theirs, o.Name)
	}
	return nil
}

// UpdateNetwork changes a network's name, description or MTU through fn; its
// address ranges cannot change.
func (s *State) UpdateNetwork(ctx context.Context, actor Actor, tenantID, id string, fn func(*model.Network) error) (*model.Network, error) {
	var out *model.Network
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		cur := t.Networks.ByID(id)
		if cur == nil {
			return model.NotFoundf("network", id)
		}
		n, err := patched(cur, fn)
		if err != nil {
			return err
		}
		if n.IPv4 != cur.IPv4 || n.IPv6 != cur.IPv6 {
			return model.Errorf(model.Invalid, "ipv4", "a network's address ranges cannot change; create a new network")
		}
		n.ID, n.TenantID, n.CreatedAt = cur.ID, cur.TenantID, cur.CreatedAt
		if err := validateNetwork(t, n); err != nil {
			return err
		}
		t.Networks = t.Networks.with(n)
		tx.networks = append(tx.networks, n)
		update(tx, networksT, n, tenantID, "network", n.ID, n.Name)
		out = n
		return nil
	})
	return out, err
}

// DeleteNetwork removes a network that holds no nodes and no enrollment keys.
func (s *State) DeleteNetwork(ctx context.Context, actor Actor, tenantID, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		n := t.Networks.ByID(id)
		if n == nil {
			return model.NotFoundf("network", id)
		}
		if c := len(t.addrs[id]); c > 0 {
			return model.Errorf(model.Conflict, "network", "network %q still has nodes; delete them first", n.Name)
		}
		for _, k := range t.Keys.All() {
			if k.NetworkID == id {
				return model.Errorf(model.Conflict, "network", "enrollment key %s still points at network %q; delete it first", k.ID, n.Name)
			}
		}
		t.Networks = t.Networks.without(id)
		delete(t.addrs, id)
		delete(t.next, id)
		remove(tx, networksT, tenantID, "network", id, n.Name)
		return nil
	})
}
