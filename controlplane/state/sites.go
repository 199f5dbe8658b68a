package state

import (
	"context"

	"github.com/cvlan/cvlan/controlplane/model"
)

// CreateSite adds an IPsec site terminated by one of the tenant's vrouter nodes.
func (s *State) CreateSite(ctx context.Context, actor Actor, site model.IPsecSite) (*model.IPsecSite, error) {
	site.ID = model.NewID(model.PrefixSite)
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(site.TenantID)
		if err != nil {
			return err
		}
		if err := validateSite(t, &site); err != nil {
			return err
		}
		site.CreatedAt = tx.now
		t.Sites = t.Sites.with(&site)
		insert(tx, sitesT, &site, site.TenantID, "ipsec_site", site.ID, site.Name+" "+site.RemoteAddr)
		return nil
	})
	return &site, err
}

func validateSite(t *Tenant, s *model.IPsecSite) error {
	s.IKEProposals, s.ESPProposals = nonNil(s.IKEProposals), nonNil(s.ESPProposals)
	if err := s.Validate(); err != nil {
		return err
	}
	n := t.Nodes.ByID(s.VRouterNodeID)
	if n == nil {
		return model.Errorf(model.NotFound, "vrouter_node", "node %q not found", s.VRouterNodeID)
	}
	if n.Kind != model.KindVRouter {
		return model.Errorf(model.Invalid, "vrouter_node", "node %q is a %s, not a vrouter", n.Name, n.Kind)
	}
	if o := t.Sites.ByKey(s.Name); o != nil && o.ID != s.ID {
		return model.Errorf(model.Conflict, "name", "an IPsec site named %q exists in tenant %q", s.Name, t.Name)
	}
	return nil
}

// UpdateSite changes an IPsec site through fn.
func (s *State) UpdateSite(ctx context.Context, actor Actor, tenantID, id string, fn func(*model.IPsecSite) error) (*model.IPsecSite, error) {
	var out *model.IPsecSite
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		cur := t.Sites.ByID(id)
		if cur == nil {
			return model.NotFoundf("IPsec site", id)
		}
		site, err := patched(cur, fn)
		if err != nil {
			return err
		}
		site.ID, site.TenantID, site.CreatedAt = cur.ID, cur.TenantID, cur.CreatedAt
		if err := validateSite(t, site); err != nil {
			return err
		}
		t.Sites = t.Sites.with(site)
		update(tx, sitesT, site, tenantID, "ipsec_site", site.ID, site.Name)
		out = site
		return nil
	})
	return out, err
}

// DeleteSite removes an IPsec site.
func (s *State) DeleteSite(ctx context.Context, actor Actor, tenantID, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		site := t.Sites.ByID(id)
		if site == nil {
			return model.NotFoundf("IPsec site", id)
		}
		t.Sites = t.Sites.without(id)
		remove(tx, sitesT, tenantID, "ipsec_site", id, site.Name)
		return nil
	})
}
