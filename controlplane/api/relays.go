package api

import (
	"net/http"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

func (s *Server) listRelays(w http.ResponseWriter, r *http.Request, p *principal) error {
	return list(w, r, s.st.World().Relays, nil)
}

func (s *Server) relay(r *http.Request) (*model.Relay, error) {
	ref := r.PathValue("relay")
	if rl := s.st.World().Relay(ref); rl != nil {
		return rl, nil
	}
	return nil, model.NotFoundf("relay", ref)
}

func (s *Server) getRelay(w http.ResponseWriter, r *http.Request, p *principal) error {
	rl, err := s.relay(r)
	return reply(w, http.StatusOK, rl, err)
}

func (s *Server) createRelay(w http.ResponseWriter, r *http.Request, p *principal) error {
	if !p.operator() {
		return forbidden("create relays")
	}
	var req apiv1.CreateRelay
	if err := decode(r, &req); err != nil {
		return err
	}
	rl := model.Relay{Name: req.Name, Region: req.Region, UDPPortMin: req.UDPPortMin, UDPPortMax: req.UDPPortMax,
		STUNPort: req.STUNPort, TLSURL: req.TLSURL, WSURL: req.WSURL}
	var err error
	if rl.PublicAddr, err = parseAddr("public_addr", req.PublicAddr); err != nil {
		return err
	}
	if rl.RelayKey, err = parseKey("relay_key", req.RelayKey, key.ParseRelayPublic); err != nil {
		return err
	}
	out, err := s.st.CreateRelay(r.Context(), p.actor(), rl)
	return reply(w, http.StatusCreated, out, err)
}

func (s *Server) updateRelay(w http.ResponseWriter, r *http.Request, p *principal) error {
	rl, err := s.relay(r)
	if err != nil {
		return err
	}
	if !p.operator() {
		return forbidden("change relays")
	}
	var req apiv1.UpdateRelay
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateRelay(r.Context(), p.actor(), rl.ID, func(rl *model.Relay) error {
		set(&rl.Region, req.Region)
		set(&rl.UDPPortMin, req.UDPPortMin)
		set(&rl.UDPPortMax, req.UDPPortMax)
		set(&rl.STUNPort, req.STUNPort)
		set(&rl.TLSURL, req.TLSURL)
		set(&rl.WSURL, req.WSURL)
		var err error
		if req.PublicAddr != nil {
			if rl.PublicAddr, err = parseAddr("public_addr", *req.PublicAddr); err != nil {
				return err
			}
		}
		if req.RelayKey != nil {
			if rl.RelayKey, err = parseKey("relay_key", *req.RelayKey, key.ParseRelayPublic); err != nil {
				return err
			}
		}
		return nil
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) deleteRelay(w http.ResponseWriter, r *http.Request, p *principal) error {
	rl, err := s.relay(r)
	if err != nil {
		return err
	}
	if !p.operator() {
		return forbidden("delete relays")
	}
	return noContent(w, s.st.DeleteRelay(r.Context(), p.actor(), rl.ID))
}

func (s *Server) listSites(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	return list(w, r, t.Sites, nil)
}

// applySite copies the fields set in req onto site.
func applySite(t *state.Tenant, req *apiv1.Site, site *model.IPsecSite) error {
	for _, f := range []struct {
		dst *string
		v   string
	}{{&site.Name, req.Name}, {&site.RemoteAddr, req.RemoteAddr}, {&site.LocalID, req.LocalID}, {&site.RemoteID, req.RemoteID},
		{&site.AuthMethod, req.AuthMethod}, {&site.PSK, req.PSK}, {&site.Certificate, req.Certificate}} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	if req.VRouterNode != "" {
		n := t.Node(req.VRouterNode)
		if n == nil {
			return model.Errorf(model.NotFound, "vrouter_node", "node %q not found", req.VRouterNode)
		}
		site.VRouterNodeID = n.ID
	}
	if req.IKEProposals != nil {
		site.IKEProposals = req.IKEProposals
	}
	if req.ESPProposals != nil {
		site.ESPProposals = req.ESPProposals
	}
	var err error
	if req.LocalSubnets != nil {
		if site.LocalSubnets, err = parsePrefixes("local_subnets", req.LocalSubnets); err != nil {
			return err
		}
	}
	if req.RemoteSubnets != nil {
		if site.RemoteSubnets, err = parsePrefixes("remote_subnets", req.RemoteSubnets); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) createSite(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	var req apiv1.Site
	if err := decode(r, &req); err != nil {
		return err
	}
	site := model.IPsecSite{TenantID: t.ID}
	if err := applySite(t, &req, &site); err != nil {
		return err
	}
	out, err := s.st.CreateSite(r.Context(), p.actor(), site)
	return reply(w, http.StatusCreated, out, err)
}

func (s *Server) getSite(w http.ResponseWriter, r *http.Request, p *principal) error {
	_, site, err := in(s, r, p, false, "site", "IPsec site", (*state.Tenant).Site)
	return reply(w, http.StatusOK, site, err)
}

func (s *Server) updateSite(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, site, err := in(s, r, p, true, "site", "IPsec site", (*state.Tenant).Site)
	if err != nil {
		return err
	}
	var req apiv1.Site
	if err := decode(r, &req); err != nil {
		return err
	}
	out, err := s.st.UpdateSite(r.Context(), p.actor(), t.ID, site.ID, func(site *model.IPsecSite) error {
		return applySite(t, &req, site)
	})
	return reply(w, http.StatusOK, out, err)
}

func (s *Server) deleteSite(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, site, err := in(s, r, p, true, "site", "IPsec site", (*state.Tenant).Site)
	if err != nil {
		return err
	}
	return noContent(w, s.st.DeleteSite(r.Context(), p.actor(), t.ID, site.ID))
}
