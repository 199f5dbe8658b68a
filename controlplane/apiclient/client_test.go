package apiclient

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// fakeServer answers a few routes the way docs/api.md says, so that transport,
// pinning and error handling can be checked without a controller.
func fakeServer(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/info", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("GET /info carried a token")
		}
		_ = apiv1.Encode(w, apiv1.Info{Version: "test", NoisePublicKey: "mkey:00"})
	})
	mux.HandleFunc("GET /api/v1/tenants/{tenant}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = apiv1.Encode(w, apiv1.Error{Error: "unknown token"})
			return
		}
		// Echo the escaped path so the test can see how the reference travelled.
		_ = apiv1.Encode(w, model.Tenant{ID: "tn_1", Name: r.PathValue("tenant"), Description: r.URL.EscapedPath()})
	})
	mux.HandleFunc("POST /api/v1/tenants/{tenant}/networks", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		_ = apiv1.Encode(w, apiv1.Error{Error: "overlaps network a (10.0.0.0/24)", Field: "ipv4"})
	})
	mux.HandleFunc("GET /api/v1/tenants", func(w http.ResponseWriter, r *http.Request) {
		// Three pages of one tenant each.
		next := map[string]string{"": "c1", "c1": "c2", "c2": ""}
		after := r.URL.Query().Get("after")
		_ = apiv1.Encode(w, apiv1.List[model.Tenant]{Items: []model.Tenant{{Name: "t" + after}}, Next: next[after]})
	})
	mux.HandleFunc("PUT /api/v1/tenants/{tenant}/policy", func(w http.ResponseWriter, r *http.Request) {
		var req apiv1.PutPolicy
		if err := apiv1.Decode(r.Body, &req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_ = apiv1.Encode(w, model.Policy{Version: 7, Document: r.Header.Get("If-Match")})
	})
	mux.HandleFunc("GET /api/v1/relays", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("upstream down\n"))
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func serverFingerprint(srv *httptest.Server) string {
	return Fingerprint(srv.Certificate().Raw)
}

func TestPinnedFingerprint(t *testing.T) {
	srv := fakeServer(t)
	ctx := context.Background()

	c, err := New(Config{Server: srv.URL, Token: "secret", Fingerprint: serverFingerprint(srv)})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.Version != "test" {
		t.Fatalf("Info with the right pin = %+v, %v", info, err)
	}

	wrong := "sha256:" + strings.Repeat("ab", 32)
	c, err = New(Config{Server: srv.URL, Fingerprint: wrong})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Info(ctx)
	var fm *FingerprintMismatchError
	if !errors.As(err, &fm) {
		t.Fatalf("Info with a wrong pin: err = %v, want *FingerprintMismatchError", err)
	}
	if fm.Pinned != wrong || fm.Presented != serverFingerprint(srv) {
		t.Errorf("mismatch = %+v", fm)
	}
	if !strings.Contains(err.Error(), "fingerprint changed") {
		t.Errorf("message %q does not say the fingerprint changed", err)
	}
}

func TestFetchFingerprint(t *testing.T) {
	srv := fakeServer(t)
	got, err := FetchFingerprint(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got != serverFingerprint(srv) {
		t.Errorf("FetchFingerprint = %s, want %s", got, serverFingerprint(srv))
	}
}

func TestCAFile(t *testing.T) {
	srv := fakeServer(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Server: srv.URL, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatalf("Info with the CA file: %v", err)
	}
	// Without the CA the system roots do not know the test certificate.
	c, _ = New(Config{Server: srv.URL})
	if _, err := c.Info(context.Background()); err == nil {
		t.Fatal("Info trusted an unknown certificate without a pin or CA")
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Server: ""},
		{Server: "http://example.com"},
		{Server: "example.com:8443"},
		{Server: "https://example.com", Fingerprint: "md5:00"},
		{Server: "https://example.com", Fingerprint: "sha256:abcd"},
		{Server: "https://example.com", Fingerprint: "sha256:" + strings.Repeat("00", 32), CAFile: "/x"},
		{Server: "https://example.com", CAFile: "/nonexistent/ca.pem"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	want := "sha256:" + strings.Repeat("ab", 32)
	for _, in := range []string{want, strings.ToUpper(want), "SHA256:" + strings.TrimSuffix(strings.Repeat("AB:", 32), ":")} {
		got, err := NormalizeFingerprint(in)
		if err != nil || got != want {
			t.Errorf("NormalizeFingerprint(%q) = %q, %v", in, got, err)
		}
	}
}

func TestErrorsAndPaths(t *testing.T) {
	srv := fakeServer(t)
	ctx := context.Background()
	c, err := New(Config{Server: srv.URL + "/", Token: "secret", Fingerprint: serverFingerprint(srv)})
	if err != nil {
		t.Fatal(err)
	}

	ten, err := c.GetTenant(ctx, "a/b c")
	if err != nil {
		t.Fatal(err)
	}
	if ten.Name != "a/b c" || ten.Description != "/api/v1/tenants/a%2Fb%20c" {
		t.Errorf("reference travelled as %q (name %q)", ten.Description, ten.Name)
	}

	_, err = c.CreateNetwork(ctx, "t", apiv1.CreateNetwork{Name: "b", IPv4: "10.0.0.0/24"})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Field != "ipv4" {
		t.Fatalf("CreateNetwork err = %#v", err)
	}
	if got, want := err.Error(), "ipv4: overlaps network a (10.0.0.0/24)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !IsStatus(err, http.StatusConflict) {
		t.Error("IsStatus(409) = false")
	}

	_, err = c.ListRelays(ctx, ListOptions{})
	if !IsStatus(err, http.StatusBadGateway) || !strings.Contains(err.Error(), "upstream down") {
		t.Errorf("non-JSON error = %v", err)
	}

	if _, err := c.GetNetwork(ctx, "", "x"); err == nil || !strings.Contains(err.Error(), "empty tenant reference") {
		t.Errorf("empty tenant: err = %v", err)
	}

	bad, _ := New(Config{Server: srv.URL, Token: "wrong", Fingerprint: serverFingerprint(srv)})
	if _, err := bad.GetTenant(ctx, "t"); err == nil || err.Error() != "unknown token" || !IsStatus(err, 401) {
		t.Errorf("bad token: err = %v", err)
	}
}

func TestAllPages(t *testing.T) {
	srv := fakeServer(t)
	ctx := context.Background()
	c, _ := New(Config{Server: srv.URL, Token: "secret", Fingerprint: serverFingerprint(srv)})
	all, err := All(ctx, func(ctx context.Context, o ListOptions) (apiv1.List[model.Tenant], error) {
		return c.ListTenants(ctx, o)
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, t := range all {
		names = append(names, t.Name)
	}
	if got := strings.Join(names, ","); got != "t,tc1,tc2" {
		t.Errorf("All = %s", got)
	}

	_, err = All(ctx, func(context.Context, ListOptions) (apiv1.List[int], error) {
		return apiv1.List[int]{Items: []int{1}, Next: "same"}, nil
	})
	if !errors.Is(err, ErrCursorLoop) {
		t.Errorf("looping cursor: err = %v", err)
	}
}

func TestPolicyIfMatch(t *testing.T) {
	srv := fakeServer(t)
	ctx := context.Background()
	c, _ := New(Config{Server: srv.URL, Token: "secret", Fingerprint: serverFingerprint(srv)})
	p, err := c.PutPolicyIfMatch(ctx, "t", "doc", 6)
	if err != nil || p.Document != `"6"` {
		t.Errorf("PutPolicyIfMatch sent If-Match %q, %v", p.Document, err)
	}
	v := int64(6)
	p, err = c.PutPolicy(ctx, "t", apiv1.PutPolicy{Document: "doc", Version: &v})
	if err != nil || p.Document != "" {
		t.Errorf("PutPolicy sent If-Match %q, %v", p.Document, err)
	}
}
