package api

import (
	"net/http"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request, p *principal) error {
	var keep func(*model.Tenant) bool
	if !p.operator() {
		keep = func(t *model.Tenant) bool { return p.sees(t.ID) }
	}
	return list(w, r, s.st.World().Tenants, keep)
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.operator() {
		return forbidden("create tenants")
	}
	var req apiv1.CreateTenant
	if err := decode(r, &req); err != nil {
		return err
	}
	t, err := s.st.CreateTenant(r.Context(), p.actor(), model.Tenant{Name: req.Name, Description: req.Description})
	return reply(w, http.StatusCreated, t, err)
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, t.Tenant, nil)
}

func (s *Server) updateTenant(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	if !p.operator() {
		return forbidden("change tenants")
	}
	var req apiv1.UpdateTenant
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateTenant(r.Context(), p.actor(), t.ID, func(t *model.Tenant) error {
		set(&t.Name, req.Name)
		set(&t.Description, req.Description)
		return nil
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	if !p.operator() {
		return forbidden("delete tenants")
	}
	return noContent(w, s.st.DeleteTenant(r.Context(), p.actor(), t.ID))
}

// set copies *v into *dst when v is not nil.
func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) error {
	var req apiv1.Enroll
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return model.Errorf(model.Invalid, "key", "an enrollment key is required")
	}
	mk, err := parseKey("machine_key", req.MachineKey, key.ParseMachinePublic)
	if err != nil {
		return err
	}
	nk, err := parseKey("node_key", req.NodeKey, key.ParseNodePublic)
	if err != nil {
		return err
	}
	node, nw, err := s.st.Enroll(r.Context(), state.Enrollment{Secret: req.Key, Name: req.Name, MachineKey: mk, NodeKey: nk})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apiv1.Enrolled{Node: *node, Network: *nw})
	return nil
}
