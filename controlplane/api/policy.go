package api

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// ifMatch parses an If-Match header carrying one of our ETags.
func ifMatch(r *http.Request) (int64, bool, error) {
	h := r.Header.Get("If-Match")
	if h == "" {
		return 0, false, nil
	}
	v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(h, "W/"), `"`), 10, 64)
	if err != nil || v < 0 {
		return 0, false, model.Errorf(model.Invalid, "If-Match", "%q is not a policy ETag such as \"3\"", clip(h))
	}
	return v, true, nil
}

func (s *Server) policyTest(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	var req apiv1.PolicyTest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if s.opts.PolicyTest == nil {
		return model.Errorf(model.PreconditionFailed, "", "this controller cannot evaluate policies")
	}
	d, err := s.opts.PolicyTest(t, req)
	return reply(w, http.StatusOK, d, err)
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	if t.Policy == nil || t.Policy.Document == "" {
		return model.NotFoundf("policy of tenant", t.Name)
	}
	w.Header().Set("ETag", etag(t.Policy.Version))
	writeJSON(w, http.StatusOK, t.Policy)
	return nil
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	var req apiv1.PutPolicy
	if err := decode(r, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Document) == "" {
		return model.Errorf(model.Invalid, "document", "must not be empty; DELETE the policy to remove it")
	}
	want, matched, err := ifMatch(r)
	if err != nil {
		return err
	}
	switch {
	case req.Version != nil && matched && *req.Version != want:
		return model.Errorf(model.Invalid, "version", "body version %d and If-Match %d disagree", *req.Version, want)
	case req.Version != nil:
		want = *req.Version
	case !matched:
		return model.Errorf(model.Invalid, "version", "the version you read is required (0 for a first policy), or an If-Match header")
	}
	out, err := s.st.SetPolicy(r.Context(), p.actor(), t.ID, want, matched && req.Version == nil, req.Document)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(out.Version))
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, true)
	if err != nil {
		return err
	}
	want, matched, err := ifMatch(r)
	if err != nil {
		return err
	}
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return model.Errorf(model.Invalid, "version", "%q is not a version number", clip(v))
		}
		want, matched = n, false
	} else if !matched {
		return model.Errorf(model.Invalid, "version", "?version= or an If-Match header is required")
	}
	_, err = s.st.SetPolicy(r.Context(), p.actor(), t.ID, want, matched, "")
	return noContent(w, err)
}

func (s *Server) policyVersions(w http.ResponseWriter, r *http.Request, p *principal) error {
	t, err := s.tenant(r, p, false)
	if err != nil {
		return err
	}
	_, limit, err := listParams(r)
	if err != nil {
		return err
	}
	vs, err := s.st.Store().PolicyVersions(r.Context(), t.ID, limit)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []model.Policy{}
	}
	writeJSON(w, http.StatusOK, apiv1.List[model.Policy]{Items: vs})
	return nil
}
