package state

import (
	"context"

	"github.com/cvlan/cvlan/controlplane/model"
)

// patched returns a modified copy of cur. fn must replace, not modify, slices.
func patched[T any](cur *T, fn func(*T) error) (*T, error) {
	c := *cur
	if err := fn(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// CreateTenant adds a tenant.
func (s *State) CreateTenant(ctx context.Context, actor Actor, t model.Tenant) (*model.Tenant, error) {
	t.ID = model.NewID(model.PrefixTenant)
	err := s.write(ctx, actor, func(tx *txn) error {
		if err := validateTenant(tx.w, &t); err != nil {
			return err
		}
		t.CreatedAt = tx.now
		tx.w.Tenants = tx.w.Tenants.with(&t)
		if len(tx.copied) == 0 {
			tx.w.tenants = cloneMap(tx.w.tenants)
		}
		tx.w.tenants[t.ID] = newTenant(&t)
		insert(tx, tenantsT, &t, t.ID, "tenant", t.ID, t.Name)
		return nil
	})
	return &t, err
}

func validateTenant(w *World, t *model.Tenant) error {
	if err := model.ValidateName("name", t.Name); err != nil {
		return err
	}
	if err := model.ValidateDescription("description", t.Description); err != nil {
		return err
	}
	if o := w.Tenants.ByKey(t.Name); o != nil && o.ID != t.ID {
		return model.Errorf(model.Conflict, "name", "a tenant named %q exists", t.Name)
	}
	return nil
}

// UpdateTenant changes a tenant's name or description through fn.
func (s *State) UpdateTenant(ctx context.Context, actor Actor, id string, fn func(*model.Tenant) error) (*model.Tenant, error) {
	var out *model.Tenant
	err := s.write(ctx, actor, func(tx *txn) error {
		t := tx.tenant(id)
		if t == nil {
			return model.NotFoundf("tenant", id)
		}
		n, err := patched(t.Tenant, fn)
		if err != nil {
			return err
		}
		n.ID, n.CreatedAt = t.ID, t.CreatedAt
		if err := validateTenant(tx.w, n); err != nil {
			return err
		}
		t.Tenant = n
		tx.w.Tenants = tx.w.Tenants.with(n)
		update(tx, tenantsT, n, n.ID, "tenant", n.ID, n.Name)
		out = n
		return nil
	})
	return out, err
}

// DeleteTenant removes an empty tenant.
func (s *State) DeleteTenant(ctx context.Context, actor Actor, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		t := tx.w.tenants[id]
		if t == nil {
			return model.NotFoundf("tenant", id)
		}
		for what, n := range map[string]int{"networks": t.Networks.Len(), "nodes": t.Nodes.Len(), "enrollment keys": t.Keys.Len(), "IPsec sites": t.Sites.Len(), "tokens": tokensOf(tx.w, id)} {
			if n > 0 {
				return model.Errorf(model.Conflict, "tenant", "tenant %q still has %d %s; delete them first", t.Name, n, what)
			}
		}
		tx.w.tenants = cloneMap(tx.w.tenants)
		delete(tx.w.tenants, id)
		tx.w.Tenants = tx.w.Tenants.without(id)
		remove(tx, tenantsT, id, "tenant", id, t.Name)
		return nil
	})
}

func tokensOf(w *World, tenantID string) int {
	n := 0
	for _, t := range w.Tokens.All() {
		if t.TenantID == tenantID {
			n++
		}
	}
	return n
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
