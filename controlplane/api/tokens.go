package api

import (
	"net/http"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// Tokens: operators manage all; a tenant-admin manages its own tenant's tokens (and
// may only create tenant roles for it); viewers manage none.

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.writes() {
		return forbidden("list tokens")
	}
	var keep func(*model.Token) bool
	if !p.operator() {
		keep = func(t *model.Token) bool { return t.TenantID == p.tok.TenantID }
	}
	return list(w, r, s.st.World().Tokens, keep)
}

// token resolves {token}: 404 unless the caller manages it.
func (s *Server) token(r *http.Request, p *principal) (*model.Token, error) {
	ref := r.PathValue("token")
	t := s.st.World().Tokens.ByID(ref)
	if t == nil || (!p.operator() && (t.TenantID != p.tok.TenantID || !p.writes())) {
		return nil, model.NotFoundf("token", ref)
	}
	return t, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.writes() {
		return forbidden("create tokens")
	}
	var req apiv1.CreateToken
	if err := decode(r, &req); err != nil {
		return err
	}
	tok := model.Token{Role: model.Role(req.Role), Description: req.Description}
	if req.Tenant != "" {
		t := s.st.World().Tenant(req.Tenant)
		if t == nil || !p.sees(t.ID) {
			return model.Errorf(model.NotFound, "tenant", "tenant %q not found", req.Tenant)
		}
		tok.TenantID = t.ID
	}
	if !p.operator() {
		if tok.Role == model.RoleOperator {
			return forbidden("create operator tokens")
		}
		if tok.TenantID == "" {
			tok.TenantID = p.tok.TenantID
		}
	}
	var err error
	if tok.ExpiresAt, err = parseExpiry(req.ExpiresIn, req.ExpiresAt, 0, s.st.Now()); err != nil {
		return err
	}
	out, secret, err := s.st.CreateToken(r.Context(), p.actor(), tok)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiv1.CreatedToken{Token: *out, Secret: secret})
	return nil
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.token(r, p)
	return reply(w, http.StatusOK, t, err)
}

func (s *Server) updateToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.token(r, p)
	if err != nil {
		return err
	}
	var req apiv1.UpdateToken
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateToken(r.Context(), p.actor(), t.ID, func(t *model.Token) error {
		set(&t.Description, req.Description)
		return nil
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.token(r, p)
	if err != nil {
		return err
	}
	return noContent(w, s.st.DeleteToken(r.Context(), p.actor(), t.ID))
}
