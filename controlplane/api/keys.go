package api

import (
	"net/http"
	"time"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

// DefaultKeyLifetime applies when a key is created without an expiry.
const DefaultKeyLifetime = 24 * time.Hour

func keyByID(t *state.Tenant, id string) *model.EnrollmentKey { return t.Keys.ByID(id) }

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	return list(w, r, t.Keys, nil)
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	var req apiv1.CreateEnrollmentKey
	if err := decode(r, &req); err != nil {
		return err
	}
	nw := t.Network(req.Network)
	if nw == nil {
		return model.Errorf(model.NotFound, "network", "network %q not found", req.Network)
	}
	k := model.EnrollmentKey{TenantID: t.ID, NetworkID: nw.ID, Description: req.Description, Tags: req.Tags,
		Reusable: req.Reusable, MaxUses: req.MaxUses, Ephemeral: req.Ephemeral}
	if k.ExpiresAt, err = parseExpiry(req.ExpiresIn, req.ExpiresAt, DefaultKeyLifetime, s.st.Now()); err != nil {
		return err
	}
	out, secret, err := s.st.CreateEnrollmentKey(r.Context(), p.actor(), k)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiv1.CreatedEnrollmentKey{EnrollmentKey: *out, Secret: secret})
	return nil
}

func (s *Server) getKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	_, k, err := in(s, r, p, false, "key", "enrollment key", keyByID)
	return reply(w, http.StatusOK, k, err)
}

func (s *Server) updateKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, k, err := in(s, r, p, true, "key", "enrollment key", keyByID)
	if err != nil {
		return err
	}
	var req apiv1.UpdateEnrollmentKey
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateEnrollmentKey(r.Context(), p.actor(), t.ID, k.ID, func(k *model.EnrollmentKey) error {
		set(&k.Description, req.Description)
		set(&k.Tags, req.Tags)
		if req.ExpiresIn != nil || req.ExpiresAt != nil {
			var in, at string
			set(&in, req.ExpiresIn)
			set(&at, req.ExpiresAt)
			exp, err := parseExpiry(in, at, 0, s.st.Now())
			if err != nil {
				return err
			}
			k.ExpiresAt = exp
		}
		return nil
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, k, err := in(s, r, p, true, "key", "enrollment key", keyByID)
	if err != nil {
		return err
	}
	return noContent(w, s.st.DeleteEnrollmentKey(r.Context(), p.actor(), t.ID, k.ID))
}
