package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/model"
)

// Valid bodies and queries for the write routes, so that a request refused for its
// caller would have succeeded for an operator.
var (
	writeBodies = map[string]string{
		"PATCH /tenants/{tenant}":                    `{"description":"x"}`,
		"POST /tenants/{tenant}/networks":            `{"name":"other","ipv4":"10.250.0.0/24"}`,
		"PATCH /tenants/{tenant}/networks/{network}": `{"mtu":1300}`,
		"POST /tenants/{tenant}/nodes":               `{"name":"n9","network":"lan"}`,
		"PATCH /tenants/{tenant}/nodes/{node}":       `{"tags":["x"]}`,
		"POST /tenants/{tenant}/keys":                `{"network":"lan"}`,
		"PATCH /tenants/{tenant}/keys/{key}":         `{"description":"x"}`,
		"PUT /tenants/{tenant}/policy":               `{"document":"rules: []","version":1}`,
		"POST /tenants/{tenant}/sites": `{"name":"hq2","vrouter_node":"gw","remote_addr":"192.0.2.1","auth_method":"psk",
			"psk":"0123456789abcdef","local_subnets":["10.1.0.0/16"],"remote_subnets":["10.2.0.0/16"]}`,
		"PATCH /tenants/{tenant}/sites/{site}": `{"remote_addr":"192.0.2.1"}`,
		"PATCH /tokens/{token}":                `{"description":"x"}`,
		"POST /tenants/{tenant}/policy/test":   `{"src":"100.64.0.1","dst":"100.64.0.2","port":22,"proto":"tcp"}`,
	}
	// readOnly are the routes that are not GETs but write nothing.
	readOnly     = map[string]bool{"POST /tenants/{tenant}/policy/test": true}
	writeQueries = map[string]string{"DELETE /tenants/{tenant}/policy": "version=1"}
)

// sweep builds one step per route, all expecting the code that code() answers.
func sweep(routes []string, token string, with map[string]string, code func(route string) int) []step {
	var out []step
	for _, r := range routes {
		out = append(out, step{route: r, token: token, with: with, body: writeBodies[r], query: writeQueries[r], code: code(r)})
	}
	return out
}

// scoped is the routes of docs/api.md under the given path prefixes.
func scoped(t *testing.T, prefixes ...string) []string {
	var out []string
	for _, r := range docRoutes(t) {
		_, path, _ := strings.Cut(r, " ")
		for _, p := range prefixes {
			if strings.HasPrefix(path, p) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

func objectVars(f *fixture, token string) map[string]string {
	return map[string]string{"tenant": f.ID, "network": f.NetworkID, "node": f.NodeID, "key": f.KeyID, "site": f.SiteID, "tok": token}
}

func always(code int) func(string) int { return func(string) int { return code } }

// TestTenantIsolation: a tenant-admin of A gets 404, never 200 or 403, for every
// kind of B's objects, whether reached through B's tenant or through its own.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := start(t)
	a, b := e.seed(t, "a", 1), e.seed(t, "b", 2)
	routes := scoped(t, "/tenants/{tenant}")
	before := e.world(t)

	for _, ref := range []string{b.ID, b.Name} {
		vars := objectVars(b, a.Admin)
		vars["tenant"] = ref
		e.run(t, vars, sweep(routes, "tok", nil, always(http.StatusNotFound)))
	}
	// B's object IDs under A's own tenant.
	var inner []string
	for _, r := range routes {
		if strings.Count(r, "{") > 1 {
			inner = append(inner, r)
		}
	}
	e.run(t, objectVars(b, a.Admin), sweep(inner, "tok", map[string]string{"tenant": a.ID}, always(http.StatusNotFound)))
	// B's tokens, and B's tenant as the tenant of a new token.
	for _, id := range []string{b.AdminID, b.ViewerID} {
		e.run(t, map[string]string{"token": id, "tok": a.Admin}, sweep(scoped(t, "/tokens/{token}"), "tok", nil, always(http.StatusNotFound)))
	}
	wantError(t, "A-admin creates a token for B", e.call(t, "POST", "/tokens", a.Admin, `{"role":"tenant-viewer","tenant":"b"}`), 404, "tenant")
	e.unchanged(t, "A-admin on B's objects", before)

	_, list := e.do(t, "GET", "/tenants", a.Admin, nil)
	if got := list.names("name"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("A-admin's GET /tenants = %v, want [a]", got)
	}
	_, list = e.do(t, "GET", "/tokens", a.Admin, nil)
	for _, tok := range list.items() {
		if tok.str("tenant_id") != a.ID {
			t.Errorf("A-admin's GET /tokens shows %v", tok)
		}
	}
	if n := len(list.items()); n != 2 {
		t.Errorf("A-admin's GET /tokens has %d tokens, want A's 2", n)
	}
	_, audit := e.do(t, "GET", "/tenants/a/audit", a.Admin, nil)
	for _, it := range audit.items() {
		if it.str("tenant_id") != a.ID {
			t.Errorf("A's audit log shows %v", it)
		}
	}
}

// TestViewerCannotWrite: a tenant-viewer reads its tenant (200) and is refused every
// write (403), and nothing is written.
func TestViewerCannotWrite(t *testing.T) {
	t.Parallel()
	e := start(t)
	a := e.seed(t, "a", 1)
	before := e.world(t)
	e.run(t, objectVars(a, a.Viewer), sweep(scoped(t, "/tenants/{tenant}"), "tok", nil, func(r string) int {
		if strings.HasPrefix(r, "GET ") || readOnly[r] {
			return http.StatusOK
		}
		return http.StatusForbidden
	}))
	vars := map[string]string{"tok": a.Viewer, "token": a.ViewerID, "relay": "none"}
	e.run(t, vars, []step{
		{route: "GET /tenants", token: "tok", code: 200, want: map[string]any{"#items": 1}},
		{route: "GET /relays", token: "tok", code: 200},
		{route: "POST /tenants", token: "tok", body: `{"name":"c"}`, code: 403},
		{route: "POST /relays", token: "tok", body: `{"name":"r","region":"eu","public_addr":"192.0.2.1","udp_port_min":1,"udp_port_max":2}`, code: 403},
		{route: "GET /tokens", token: "tok", code: 403},
		{route: "POST /tokens", token: "tok", body: `{"role":"tenant-viewer","tenant":"a"}`, code: 403},
		// Tokens are admin+; to a viewer even its own does not exist.
		{route: "GET /tokens/{token}", token: "tok", code: 404},
		{route: "PATCH /tokens/{token}", token: "tok", body: `{"description":"x"}`, code: 404},
		{route: "DELETE /tokens/{token}", token: "tok", code: 404},
		{route: "GET /audit", token: "tok", code: 403},
	})
	e.unchanged(t, "viewer writes", before)
}

// TestTenantAdminLimits: a tenant-admin may not create tenants, relays or operator
// tokens (403) and cannot see operator tokens (404).
func TestTenantAdminLimits(t *testing.T) {
	t.Parallel()
	e := start(t)
	a := e.seed(t, "a", 1)
	relay := e.must(t, 201, "POST", "/relays", e.op, `{"name":"r1","region":"eu","public_addr":"192.0.2.1","udp_port_min":1,"udp_port_max":2}`)
	var opID string
	for _, tok := range e.State.World().Tokens.All() {
		if tok.Role == model.RoleOperator {
			opID = tok.ID
		}
	}
	before := e.world(t)
	vars := map[string]string{"tok": a.Admin, "token": opID, "relay": relay.str("id")}
	e.run(t, vars, []step{
		{route: "POST /tenants", token: "tok", body: `{"name":"c"}`, code: 403},
		{route: "PATCH /tenants/{tenant}", token: "tok", with: map[string]string{"tenant": "a"}, body: `{"description":"x"}`, code: 403},
		{route: "DELETE /tenants/{tenant}", token: "tok", with: map[string]string{"tenant": "a"}, code: 403},
		{route: "POST /relays", token: "tok", body: `{"name":"r2","region":"eu","public_addr":"192.0.2.1","udp_port_min":1,"udp_port_max":2}`, code: 403},
		{route: "PATCH /relays/{relay}", token: "tok", body: `{"region":"us"}`, code: 403},
		{route: "DELETE /relays/{relay}", token: "tok", code: 403},
		{route: "GET /relays/{relay}", token: "tok", code: 200, want: map[string]any{"name": "r1"}},
		{route: "POST /tokens", token: "tok", body: `{"role":"operator"}`, code: 403},
		{route: "GET /tokens/{token}", token: "tok", code: 404},
		{route: "PATCH /tokens/{token}", token: "tok", body: `{"description":"mine now"}`, code: 404},
		{route: "DELETE /tokens/{token}", token: "tok", code: 404},
		{route: "GET /audit", token: "tok", code: 403},
	})
	e.unchanged(t, "tenant-admin beyond its role", before)

	// What it may do: tenant tokens for its own tenant, with or without naming it.
	for _, body := range []string{`{"role":"tenant-viewer"}`, `{"role":"tenant-admin","tenant":"a"}`} {
		tok := e.must(t, 201, "POST", "/tokens", a.Admin, body)
		if tok.str("tenant_id") != a.ID {
			t.Errorf("tenant-admin's new token %v is not scoped to its tenant", tok)
		}
	}
}

// TestUnauthenticated: no, malformed, unknown and expired tokens get 401 with
// WWW-Authenticate.
func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	var clk clock
	e := startWith(t, clk.opts())
	a := e.seed(t, "a", 1)
	short := e.must(t, 201, "POST", "/tokens", e.op, `{"role":"tenant-admin","tenant":"a","expires_in":"1h"}`).str("secret")
	id, _, _ := strings.Cut(a.Admin, ".")
	for _, tc := range []struct{ name, header string }{
		{"missing", ""},
		{"not bearer", "Basic " + a.Admin},
		{"empty bearer", "Bearer "},
		{"malformed", "Bearer garbage"},
		{"unknown id", "Bearer tk_nosuchtoken.secret"},
		{"wrong secret", "Bearer " + id + ".notthesecret"},
	} {
		r := e.call(t, "GET", "/tenants", "", nil, "Authorization", tc.header)
		wantError(t, tc.name+" token", r, 401, "")
	}

	e.must(t, 200, "GET", "/tenants/a", short, nil)
	clk.advance(59 * time.Minute)
	e.must(t, 200, "GET", "/tenants/a", short, nil)
	clk.advance(2 * time.Minute)
	wantError(t, "expired token", e.call(t, "GET", "/tenants/a", short, nil), 401, "")
	before := e.world(t)
	wantError(t, "expired token writes", e.call(t, "POST", "/tenants/a/networks", short, writeBodies["POST /tenants/{tenant}/networks"]), 401, "")
	e.unchanged(t, "expired token", before)
	e.must(t, 200, "GET", "/tenants/a", a.Admin, nil) // a token without expiry lives on

	// A deleted token stops working at once.
	e.must(t, 204, "DELETE", "/tokens/"+a.AdminID, e.op, nil)
	wantError(t, "revoked token", e.call(t, "GET", "/tenants/a", a.Admin, nil), 401, "")
}
