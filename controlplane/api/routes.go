package api

import (
	"net/http"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/controlplane/store"
)

// routes registers every route of docs/api.md.
func (s *Server) routes() {
	s.public("GET /info", s.info)
	s.public("POST /enroll", s.enroll)

	s.handle("GET /tenants", s.listTenants)
	s.handle("POST /tenants", s.createTenant)
	s.handle("GET /tenants/{tenant}", s.getTenant)
	s.handle("PATCH /tenants/{tenant}", s.updateTenant)
	s.handle("DELETE /tenants/{tenant}", s.deleteTenant)
	s.handle("GET /tenants/{tenant}/audit", s.tenantAudit)
	s.handle("GET /audit", s.allAudit)

	s.handle("GET /tenants/{tenant}/networks", s.listNetworks)
	s.handle("POST /tenants/{tenant}/networks", s.createNetwork)
	s.handle("GET /tenants/{tenant}/networks/{network}", s.getNetwork)
	s.handle("PATCH /tenants/{tenant}/networks/{network}", s.updateNetwork)
	s.handle("DELETE /tenants/{tenant}/networks/{network}", s.deleteNetwork)

	s.handle("GET /tenants/{tenant}/nodes", s.listNodes)
	s.handle("POST /tenants/{tenant}/nodes", s.createNode)
	s.handle("GET /tenants/{tenant}/nodes/{node}", s.getNode)
	s.handle("PATCH /tenants/{tenant}/nodes/{node}", s.updateNode)
	s.handle("DELETE /tenants/{tenant}/nodes/{node}", s.deleteNode)
	s.handle("POST /tenants/{tenant}/nodes/{node}/rotate-key", s.rotateNodeKey)
	s.handle("GET /tenants/{tenant}/nodes/{node}/status", s.nodeStatus)

	s.handle("GET /tenants/{tenant}/keys", s.listKeys)
	s.handle("POST /tenants/{tenant}/keys", s.createKey)
	s.handle("GET /tenants/{tenant}/keys/{key}", s.getKey)
	s.handle("PATCH /tenants/{tenant}/keys/{key}", s.updateKey)
	s.handle("DELETE /tenants/{tenant}/keys/{key}", s.deleteKey)

	s.handle("GET /tenants/{tenant}/policy", s.getPolicy)
	s.handle("PUT /tenants/{tenant}/policy", s.putPolicy)
	s.handle("DELETE /tenants/{tenant}/policy", s.deletePolicy)
	s.handle("GET /tenants/{tenant}/policy/versions", s.policyVersions)
	s.handle("POST /tenants/{tenant}/policy/test", s.policyTest)

	s.handle("GET /tenants/{tenant}/sites", s.listSites)
	s.handle("POST /tenants/{tenant}/sites", s.createSite)
	s.handle("GET /tenants/{tenant}/sites/{site}", s.getSite)
	s.handle("PATCH /tenants/{tenant}/sites/{site}", s.updateSite)
	s.handle("DELETE /tenants/{tenant}/sites/{site}", s.deleteSite)

	s.handle("GET /tokens", s.listTokens)
	s.handle("POST /tokens", s.createToken)
	s.handle("GET /tokens/{token}", s.getToken)
	s.handle("PATCH /tokens/{token}", s.updateToken)
	s.handle("DELETE /tokens/{token}", s.deleteToken)

	s.handle("GET /relays", s.listRelays)
	s.handle("POST /relays", s.createRelay)
	s.handle("GET /relays/{relay}", s.getRelay)
	s.handle("PATCH /relays/{relay}", s.updateRelay)
	s.handle("DELETE /relays/{relay}", s.deleteRelay)
}

// tenant resolves {tenant} for the caller: 404 when it does not exist or the caller
// cannot see it (never 403, which would confirm it exists), then 403 when write is
// asked of a read-only role.
func (s *Server) tenant(r *http.Request, p *principal, write bool) (*state.Tenant, error) {
	ref := r.PathValue("tenant")
	t := s.st.World().Tenant(ref)
	if t == nil || !p.sees(t.ID) {
		return nil, model.NotFoundf("tenant", ref)
	}
	if write && !p.writes() {
		return nil, forbidden("change tenant " + t.Name)
	}
	return t, nil
}

// in resolves a path object inside a tenant the caller may see (and write).
func in[T any](s *Server, r *http.Request, p *principal, write bool, param, kind string, find func(*state.Tenant, string) *T) (*state.Tenant, *T, error) {
	t, err := s.tenant(r, p, write)
	if err != nil {
		return nil, nil, err
	}
	ref := r.PathValue(param)
	v := find(t, ref)
	if v == nil {
		return nil, nil, model.NotFoundf(kind, ref)
	}
	return t, v, nil
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, apiv1.Info{Version: s.opts.Version, NoisePublicKey: s.opts.NoisePublicKey})
	return nil
}

func noContent(w http.ResponseWriter, err error) error {
	if err == nil {
		w.WriteHeader(http.StatusNoContent)
	}
	return err
}

func reply(w http.ResponseWriter, code int, v any, err error) error {
	if err == nil {
		writeJSON(w, code, v)
	}
	return err
}

func (s *Server) tenantAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	return s.audit(w, r, t.ID)
}

func (s *Server) allAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.operator() {
		return forbidden("read every tenant's audit log")
	}
	return s.audit(w, r, "")
}

// audit pages the audit log, newest first; it is history, not state, so it is read
// from the store.
func (s *Server) audit(w http.ResponseWriter, r *http.Request, tenantID string) error {
	_, limit, err := listParams(r)
	if err != nil {
		return err
	}
	// One more than asked tells whether another page exists.
	entries, err := s.st.Store().AuditLog(r.Context(), store.AuditQuery{TenantID: tenantID, Before: r.URL.Query().Get("before"), Limit: limit + 1})
	if err != nil {
		return err
	}
	out := apiv1.List[model.AuditEntry]{Items: []model.AuditEntry{}}
	if len(entries) > limit {
		entries = entries[:limit]
		out.Next = entries[limit-1].ID
	}
	out.Items = append(out.Items, entries...)
	writeJSON(w, http.StatusOK, out)
	return nil
}
