// Package api serves the controller's REST API (/api/v1), /healthz and /metrics on
// net/http. Handlers read the current state snapshot and ask package state for every
// change; they never touch the store for state, never decide validity beyond parsing
// the wire format, and never reveal that an object of another tenant exists (404).
package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
)

// Options configure a Server.
type Options struct {
	Log            *slog.Logger
	Registry       *prometheus.Registry // where metrics go; a new one when nil
	Version        string
	NoisePublicKey string // the controller's Noise static key, text form
	// NodeStatus reports a node's connection and counters (the control channel's
	// Server.NodeStatus); nil reports every node as not connected.
	NodeStatus func(tenantID, nodeID string) apiv1.NodeStatus
	// PolicyTest answers "can src reach dst on port/proto?" from the tenant's
	// compiled policy; nil makes the route answer 501.
	PolicyTest func(t *state.Tenant, req apiv1.PolicyTest) (apiv1.PolicyDecision, error)
}

// Server is the HTTP handler of the controller.
type Server struct {
	st      *state.State
	opts    Options
	mux     *http.ServeMux
	metrics *metrics
}

// New returns the controller's handler over st.
func New(st *state.State, opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{st: st, opts: opts, mux: http.NewServeMux(), metrics: newMetrics(opts.Registry, st)}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	s.routes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, model.Errorf(model.NotFound, "", "no route %s %s", r.Method, r.URL.Path))
	})
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// principal is the authenticated caller.
type principal struct{ tok *model.Token }

func (p *principal) actor() state.Actor { return state.Actor(p.tok.ID) }
func (p *principal) operator() bool     { return p.tok.Role == model.RoleOperator }
func (p *principal) sees(tenantID string) bool {
	return p.operator() || p.tok.TenantID == tenantID
}
func (p *principal) writes() bool { return p.tok.Role != model.RoleTenantViewer }

type handler func(w http.ResponseWriter, r *http.Request, p *principal) error

// handle registers an authenticated API route.
func (s *Server) handle(pattern string, h handler) {
	s.public(pattern, func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.authenticate(r)
		if err != nil {
			return err
		}
		return h(w, r, p)
	})
}

// public registers an API route that needs no bearer token.
func (s *Server) public(pattern string, h func(http.ResponseWriter, *http.Request) error) {
	method, path, _ := strings.Cut(pattern, " ")
	route := method + " " + apiv1.Prefix + path
	s.mux.HandleFunc(route, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		r.Body = http.MaxBytesReader(rec, r.Body, apiv1.MaxBodyBytes+1)
		if err := h(rec, r); err != nil {
			if model.KindOf(err) == 0 {
				s.opts.Log.Error("request failed", "route", route, "err", err)
			}
			writeError(rec, err)
		}
		s.metrics.observe(route, rec.code, time.Since(start))
	})
}

func (s *Server) authenticate(r *http.Request) (*principal, error) {
	h := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || secret == "" {
		return nil, model.Errorf(model.Unauthenticated, "", "missing bearer token (Authorization: Bearer <token>)")
	}
	tok, err := s.st.Authenticate(strings.TrimSpace(secret))
	if err != nil {
		return nil, err
	}
	return &principal{tok: tok}, nil
}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

var statusOf = map[model.Kind]int{
	model.Invalid:            http.StatusBadRequest,
	model.Unauthenticated:    http.StatusUnauthorized,
	model.Forbidden:          http.StatusForbidden,
	model.NotFound:           http.StatusNotFound,
	model.Conflict:           http.StatusConflict,
	model.PreconditionFailed: http.StatusPreconditionFailed,
	model.Exhausted:          http.StatusConflict,
}

func writeError(w http.ResponseWriter, err error) {
	var e *model.Error
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &e):
		if e.Kind == model.Unauthenticated {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cvlan"`)
		}
		writeJSON(w, statusOf[e.Kind], apiv1.Error{Error: e.Msg, Field: e.Field})
	case errors.As(err, &tooBig):
		writeJSON(w, http.StatusRequestEntityTooLarge, apiv1.Error{Error: "request body too large"})
	default:
		writeJSON(w, http.StatusInternalServerError, apiv1.Error{Error: "internal error; see the controller's log"})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	apiv1.Encode(w, v)
}

// decode reads a JSON request body into v, whatever Content-Type claims.
func decode(r *http.Request, v any) error {
	return apiv1.Decode(r.Body, v)
}

func forbidden(what string) error {
	return model.Errorf(model.Forbidden, "", "your token's role may not %s", what)
}

// listParams reads ?limit= and ?after=.
func listParams(r *http.Request) (after string, limit int, err error) {
	q := r.URL.Query()
	limit = apiv1.DefaultLimit
	if v := q.Get("limit"); v != "" {
		limit, err = strconv.Atoi(v)
		if err != nil || limit < 1 || limit > apiv1.MaxLimit {
			return "", 0, model.Errorf(model.Invalid, "limit", "%q is not a number from 1 to %d", v, apiv1.MaxLimit)
		}
	}
	return q.Get("after"), limit, nil
}

// list answers one page of c, keeping only objects for which keep is true.
func list[T any](w http.ResponseWriter, r *http.Request, c state.Coll[T], keep func(*T) bool) error {
	after, limit, err := listParams(r)
	if err != nil {
		return err
	}
	out := apiv1.List[*T]{Items: []*T{}}
	if keep == nil {
		out.Items, out.Next = c.Page(after, limit)
		if out.Items == nil {
			out.Items = []*T{}
		}
	} else {
		rest, _ := c.Page(after, c.Len())
		for i, v := range rest {
			if !keep(v) {
				continue
			}
			if len(out.Items) == limit {
				out.Next = c.KeyOf(rest[i-1])
				break
			}
			out.Items = append(out.Items, v)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
