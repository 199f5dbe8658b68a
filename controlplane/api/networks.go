package api

import (
	"net/http"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	return list(w, r, t.Networks, nil)
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	var req apiv1.CreateNetwork
	if err := decode(r, &req); err != nil {
		return err
	}
	n := model.Network{TenantID: t.ID, Name: req.Name, Description: req.Description, MTU: req.MTU}
	if req.IPv4 == "" {
		return model.Errorf(model.Invalid, "ipv4", "a CIDR such as 100.64.0.0/24 is required")
	}
	if n.IPv4, err = parsePrefix("ipv4", req.IPv4); err != nil {
		return err
	}
	if n.IPv6, err = parsePrefix("ipv6", req.IPv6); err != nil {
		return err
	}
	if req.MTU != 0 && (req.MTU < model.MinMTU || req.MTU > model.MaxMTU) {
		return model.Errorf(model.Invalid, "mtu", "%d out of range %d to %d", req.MTU, model.MinMTU, model.MaxMTU)
	}
	out, err := s.st.CreateNetwork(r.Context(), p.actor(), n)
	return reply(w, http.StatusCreated, out, err)
}

func (s *Server) getNetwork(w http.ResponseWriter, r *http.Request, p *principal) error {
	_, n, err := in(s, r, p, false, "network", "network", (*state.Tenant).Network)
	return reply(w, http.StatusOK, n, err)
}

func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, n, err := in(s, r, p, true, "network", "network", (*state.Tenant).Network)
	if err != nil {
		return err
	}
	var req apiv1.UpdateNetwork
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateNetwork(r.Context(), p.actor(), t.ID, n.ID, func(n *model.Network) error {
		set(&n.Name, req.Name)
		set(&n.Description, req.Description)
		set(&n.MTU, req.MTU)
		return nil
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) deleteNetwork(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, n, err := in(s, r, p, true, "network", "network", (*state.Tenant).Network)
	if err != nil {
		return err
	}
	return noContent(w, s.st.DeleteNetwork(r.Context(), p.actor(), t.ID, n.ID))
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	var keep func(*model.Node) bool
	if ref := r.URL.Query().Get("network"); ref != "" {
		nw := t.Network(ref)
		if nw == nil {
			return model.Errorf(model.NotFound, "network", "network %q not found", ref)
		}
		keep = func(n *model.Node) bool { return n.NetworkID == nw.ID }
	}
	return list(w, r, t.Nodes, keep)
}

func (s *Server) createNode(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	var req apiv1.CreateNode
	if err := decode(r, &req); err != nil {
		return err
	}
	nw := t.Network(req.Network)
	if nw == nil {
		return model.Errorf(model.NotFound, "network", "network %q not found", req.Network)
	}
	n := model.Node{TenantID: t.ID, NetworkID: nw.ID, Name: req.Name, Kind: model.NodeKind(req.Kind), Tags: req.Tags}
	if n.MachineKey, err = parseKey("machine_key", req.MachineKey, key.ParseMachinePublic); err != nil {
		return err
	}
	if n.NodeKey, err = parseKey("node_key", req.NodeKey, key.ParseNodePublic); err != nil {
		return err
	}
	if n.Routes, err = parsePrefixes("routes", req.Routes); err != nil {
		return err
	}
	out, err := s.st.CreateNode(r.Context(), p.actor(), n)
	return reply(w, http.StatusCreated, out, err)
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request, p *principal) error {
	_, n, err := in(s, r, p, false, "node", "node", (*state.Tenant).Node)
	return reply(w, http.StatusOK, n, err)
}

func (s *Server) updateNode(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, n, err := in(s, r, p, true, "node", "node", (*state.Tenant).Node)
	if err != nil {
		return err
	}
	var req apiv1.UpdateNode
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateNode(r.Context(), p.actor(), t.ID, n.ID, func(n *model.Node) error {
		set(&n.Name, req.Name)
		set(&n.Tags, req.Tags)
		if req.Routes != nil {
			rs, err := parsePrefixes("routes", *req.Routes)
			if err != nil {
				return err
			}
			n.Routes = rs
		}
		if req.NodeKey != nil {
			k, err := parseKey("node_key", *req.NodeKey, key.ParseNodePublic)
			if err != nil {
				return err
			}
			n.NodeKey = k
		}
		return nil
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) rotateNodeKey(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, n, err := in(s, r, p, true, "node", "node", (*state.Tenant).Node)
	if err != nil {
		return err
	}
	out, err := s.st.RequestKeyRotation(r.Context(), p.actor(), t.ID, n.ID)
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) nodeStatus(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, n, err := in(s, r, p, false, "node", "node", (*state.Tenant).Node)
	if err != nil {
		return err
	}
	st := apiv1.NodeStatus{NodeID: n.ID, Rules: []apiv1.RuleCounter{}, Drops: map[string]uint64{}}
	if s.opts.NodeStatus != nil {
		st = s.opts.NodeStatus(t.ID, n.ID)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, n, err := in(s, r, p, true, "node", "node", (*state.Tenant).Node)
	if err != nil {
		return err
	}
	return noContent(w, s.st.DeleteNode(r.Context(), p.actor(), t.ID, n.ID))
}
