package api_test

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// Sentinels for step.want.
type presence bool

const (
	present presence = true  // the field is there and not empty
	absent  presence = false // the field is not there
)

// step is one request of a scenario: a route of docs/api.md with its placeholders
// filled from vars.
type step struct {
	route string            // "METHOD /path/{placeholder}", exactly as in docs/api.md
	with  map[string]string // placeholder values for this step only
	query string
	token string // "" = the operator's; "none" = no Authorization
	body  string // JSON; {var} is replaced by vars[var]
	code  int
	want  map[string]any    // dotted path (or "#items") -> value, compared printed
	save  map[string]string // var -> dotted path of the answer
}

// run sends the steps in order and returns the routes they covered.
func (e *env) run(t *testing.T, vars map[string]string, steps []step) map[string]bool {
	t.Helper()
	covered := map[string]bool{}
	for _, s := range steps {
		covered[s.route] = true
		method, tmpl, _ := strings.Cut(s.route, " ")
		with := map[string]string{}
		for k, v := range s.with {
			with[k] = expand(v, vars)
		}
		path, body := expand(tmpl, with, vars), expand(s.body, vars)
		if s.query != "" {
			path += "?" + s.query
		}
		token := e.op
		switch s.token {
		case "none":
			token = ""
		case "":
		default:
			token = vars[s.token]
		}
		var b any
		if body != "" {
			b = body
		}
		code, got := e.do(t, method, path, token, b)
		if code != s.code {
			t.Errorf("%s %s = %d, want %d: %v", method, path, code, s.code, got)
			continue
		}
		checkFields(t, method+" "+path, got, s.want, vars)
		for v, p := range s.save {
			vars[v] = got.str(p)
		}
	}
	return covered
}

func expand(s string, vars ...map[string]string) string {
	for _, m := range vars {
		for k, v := range m {
			s = strings.ReplaceAll(s, "{"+k+"}", v)
		}
	}
	return s
}

func checkFields(t *testing.T, what string, got obj, want map[string]any, vars map[string]string) {
	t.Helper()
	for path, w := range want {
		if path == "#items" {
			if n := len(got.items()); n != w.(int) {
				t.Errorf("%s: %d items, want %d: %v", what, n, w, got)
			}
			continue
		}
		v := got.get(path)
		switch w {
		case present:
			if v == nil || v == "" {
				t.Errorf("%s: %s missing: %v", what, path, got)
			}
		case absent:
			if v != nil {
				t.Errorf("%s: %s = %v, want it absent", what, path, v)
			}
		default:
			if s, ok := w.(string); ok {
				w = expand(s, vars)
			}
			if fmt.Sprint(v) != fmt.Sprint(w) {
				t.Errorf("%s: %s = %v, want %v", what, path, v, w)
			}
		}
	}
}

// docRoutes reads the route table of docs/api.md.
func docRoutes(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?m)^\\| (GET|POST|PUT|PATCH|DELETE) \\| `([^`]+)` \\|")
	var out []string
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1]+" "+m[2])
	}
	if len(out) < 40 {
		t.Fatalf("found only %d routes in docs/api.md", len(out))
	}
	return out
}

// TestEveryRoute walks every route of docs/api.md once on its happy path, creating a
// tenant with one of everything and deleting it all again.
func TestEveryRoute(t *testing.T) {
	t.Parallel()
	e := start(t)
	vars := map[string]string{"mkey": machineKey(), "nkey": nodeKey(), "noise": e.NoisePublicKey}
	const site = `{"name":"hq","vrouter_node":"gw","remote_addr":"198.51.100.7","auth_method":"psk",
		"psk":"0123456789abcdef0123","local_subnets":["10.200.0.0/16"],"remote_subnets":["192.168.0.0/24"]}`
	steps := []step{
		{route: "GET /info", token: "none", code: 200, want: map[string]any{"version": "test", "noise_public_key": "{noise}"}},
		{route: "POST /tenants", body: `{"name":"acme","description":"first"}`, code: 201,
			want: map[string]any{"name": "acme", "description": "first", "id": present, "created_at": present}, save: map[string]string{"tenant": "id"}},
		{route: "GET /tenants", code: 200, want: map[string]any{"#items": 1, "items.0.name": "acme", "next": absent}},
		{route: "GET /tenants/{tenant}", code: 200, want: map[string]any{"name": "acme"}},
		{route: "PATCH /tenants/{tenant}", body: `{"description":"changed"}`, code: 200, want: map[string]any{"name": "acme", "description": "changed"}},

		{route: "POST /tenants/{tenant}/networks", body: `{"name":"lan","ipv4":"100.64.0.0/24","ipv6":"fd00:64::/64"}`, code: 201,
			want: map[string]any{"name": "lan", "ipv4": "100.64.0.0/24", "ipv6": "fd00:64::/64", "mtu": 1420, "tenant_id": "{tenant}"}, save: map[string]string{"network": "id"}},
		{route: "GET /tenants/{tenant}/networks", code: 200, want: map[string]any{"#items": 1, "items.0.id": "{network}"}},
		{route: "GET /tenants/{tenant}/networks/{network}", with: map[string]string{"network": "lan"}, code: 200, want: map[string]any{"id": "{network}"}},
		{route: "PATCH /tenants/{tenant}/networks/{network}", body: `{"mtu":1380,"description":"office"}`, code: 200,
			want: map[string]any{"mtu": 1380, "description": "office", "ipv4": "100.64.0.0/24"}},

		{route: "POST /tenants/{tenant}/nodes", body: `{"name":"gw","network":"lan","kind":"vrouter","tags":["edge"],"machine_key":"{mkey}","node_key":"{nkey}","routes":["10.200.0.0/16"]}`, code: 201,
			want: map[string]any{"name": "gw", "kind": "vrouter", "ipv4": "100.64.0.1", "ipv6": "fd00:64::1", "tags.0": "edge", "machine_key": "{mkey}", "routes.0": "10.200.0.0/16", "network_id": "{network}"},
			save: map[string]string{"node": "id"}},
		{route: "GET /tenants/{tenant}/nodes", query: "network=lan", code: 200, want: map[string]any{"#items": 1, "items.0.name": "gw"}},
		{route: "GET /tenants/{tenant}/nodes/{node}", code: 200, want: map[string]any{"name": "gw", "node_key": "{nkey}"}},
		{route: "PATCH /tenants/{tenant}/nodes/{node}", body: `{"tags":["edge","dc1"]}`, code: 200, want: map[string]any{"tags.1": "dc1", "ipv4": "100.64.0.1"}},
		{route: "POST /tenants/{tenant}/nodes/{node}/rotate-key", code: 200, want: map[string]any{"rotate_requested_at": present, "node_key": "{nkey}"}},

		{route: "POST /tenants/{tenant}/keys", body: `{"network":"lan","reusable":true,"max_uses":2,"tags":["laptop"],"expires_in":"1h"}`, code: 201,
			want: map[string]any{"secret": present, "network_id": "{network}", "max_uses": 2, "uses": 0, "reusable": true}, save: map[string]string{"key": "id", "secret": "secret"}},
		{route: "GET /tenants/{tenant}/keys", code: 200, want: map[string]any{"#items": 1, "items.0.id": "{key}", "items.0.secret": absent}},
		{route: "GET /tenants/{tenant}/keys/{key}", code: 200, want: map[string]any{"id": "{key}", "secret": absent}},
		{route: "PATCH /tenants/{tenant}/keys/{key}", body: `{"description":"for laptops"}`, code: 200, want: map[string]any{"description": "for laptops", "max_uses": 2}},
		{route: "POST /enroll", token: "none", body: `{"key":"{secret}","name":"laptop","machine_key":"` + machineKey() + `","node_key":"` + nodeKey() + `"}`, code: 201,
			want: map[string]any{"node.name": "laptop", "node.ipv4": "100.64.0.2", "node.tags.0": "laptop", "network.id": "{network}"}, save: map[string]string{"laptop": "node.id"}},

		{route: "PUT /tenants/{tenant}/policy", body: `{"document":"rules: [{src: ['*'], dst: ['*']}]","version":0}`, code: 200, want: map[string]any{"version": 1, "document": "rules: [{src: ['*'], dst: ['*']}]"}},
		{route: "GET /tenants/{tenant}/policy", code: 200, want: map[string]any{"version": 1, "tenant_id": "{tenant}"}},
		{route: "GET /tenants/{tenant}/policy/versions", code: 200, want: map[string]any{"#items": 1, "items.0.version": 1}},
		{route: "POST /tenants/{tenant}/policy/test", body: `{"src":"gw","dst":"laptop","port":22,"proto":"tcp"}`, code: 200,
			want: map[string]any{"verdict": "accept", "rule": "rule-0", "src": "gw", "dst": "laptop", "policy_version": 1}},
		{route: "GET /tenants/{tenant}/nodes/{node}/status", code: 200, want: map[string]any{"connected": false, "node_id": "{node}"}},

		{route: "POST /tenants/{tenant}/sites", body: site, code: 201,
			want: map[string]any{"name": "hq", "vrouter_node_id": "{node}", "auth_method": "psk", "psk": absent, "local_subnets.0": "10.200.0.0/16"}, save: map[string]string{"site": "id"}},
		{route: "GET /tenants/{tenant}/sites", code: 200, want: map[string]any{"#items": 1, "items.0.id": "{site}"}},
		{route: "GET /tenants/{tenant}/sites/{site}", with: map[string]string{"site": "hq"}, code: 200, want: map[string]any{"id": "{site}", "psk": absent}},
		{route: "PATCH /tenants/{tenant}/sites/{site}", body: `{"remote_addr":"vpn.example.com"}`, code: 200, want: map[string]any{"remote_addr": "vpn.example.com", "name": "hq"}},

		{route: "GET /tenants/{tenant}/audit", query: "limit=2", code: 200, want: map[string]any{"#items": 2, "items.0.tenant_id": "{tenant}", "next": present}},
		{route: "GET /audit", code: 200, want: map[string]any{"items.0.kind": "ipsec_site", "items.0.action": "update"}},

		{route: "POST /tokens", body: `{"role":"tenant-viewer","tenant":"acme","description":"ro","expires_in":"24h"}`, code: 201,
			want: map[string]any{"secret": present, "role": "tenant-viewer", "tenant_id": "{tenant}", "expires_at": present}, save: map[string]string{"token": "id"}},
		{route: "GET /tokens", code: 200, want: map[string]any{"#items": 2}},
		{route: "GET /tokens/{token}", code: 200, want: map[string]any{"id": "{token}", "secret": absent}},
		{route: "PATCH /tokens/{token}", body: `{"description":"read only"}`, code: 200, want: map[string]any{"description": "read only", "role": "tenant-viewer"}},

		{route: "POST /relays", body: `{"name":"fra1","region":"eu","public_addr":"203.0.113.5","udp_port_min":40000,"udp_port_max":40100,"tls_url":"https://fra1.example.com"}`, code: 201,
			want: map[string]any{"name": "fra1", "public_addr": "203.0.113.5", "udp_port_max": 40100}, save: map[string]string{"relay": "id"}},
		{route: "GET /relays", code: 200, want: map[string]any{"#items": 1, "items.0.id": "{relay}"}},
		{route: "GET /relays/{relay}", with: map[string]string{"relay": "fra1"}, code: 200, want: map[string]any{"region": "eu"}},
		{route: "PATCH /relays/{relay}", body: `{"region":"eu-central","stun_port":3478}`, code: 200, want: map[string]any{"region": "eu-central", "stun_port": 3478, "name": "fra1"}},

		{route: "DELETE /relays/{relay}", code: 204},
		{route: "DELETE /tokens/{token}", code: 204},
		{route: "DELETE /tenants/{tenant}/sites/{site}", code: 204},
		{route: "DELETE /tenants/{tenant}/policy", query: "version=1", code: 204},
		{route: "DELETE /tenants/{tenant}/keys/{key}", code: 204},
		{route: "DELETE /tenants/{tenant}/nodes/{node}", code: 204},
		{route: "DELETE /tenants/{tenant}/nodes/{node}", with: map[string]string{"node": "{laptop}"}, code: 204},
		{route: "DELETE /tenants/{tenant}/networks/{network}", code: 204},
		{route: "DELETE /tenants/{tenant}", code: 204},
		{route: "GET /tenants", code: 200, want: map[string]any{"#items": 0}},
		{route: "GET /relays", code: 200, want: map[string]any{"#items": 0}},
	}
	covered := e.run(t, vars, steps)
	var missing []string
	for _, r := range docRoutes(t) {
		if !covered[r] {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		t.Errorf("routes of docs/api.md not exercised: %v", missing)
	}
}

// TestHealthAndMetrics: /healthz answers ok; /metrics counts requests by route and
// code, times them and reports object counts.
func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	e := start(t)
	if r := e.call(t, "GET", "/healthz", "", nil); r.code != 200 || string(r.raw) != "ok\n" {
		t.Errorf("/healthz = %d %q", r.code, r.raw)
	}
	e.must(t, 201, "POST", "/tenants", e.op, `{"name":"acme"}`)
	e.must(t, 201, "POST", "/tenants/acme/networks", e.op, `{"name":"lan","ipv4":"10.0.0.0/24"}`)
	e.must(t, 200, "GET", "/tenants", e.op, nil)
	e.must(t, 404, "GET", "/tenants/nosuch", e.op, nil)
	r := e.call(t, "GET", "/metrics", "", nil)
	if r.code != 200 {
		t.Fatalf("/metrics = %d", r.code)
	}
	for _, want := range []string{
		`cvlan_api_requests_total{code="200",route="GET /api/v1/tenants"} 1`,
		`cvlan_api_requests_total{code="201",route="POST /api/v1/tenants/{tenant}/networks"} 1`,
		`cvlan_api_requests_total{code="404",route="GET /api/v1/tenants/{tenant}"} 1`,
		`cvlan_api_request_duration_seconds_bucket{route="GET /api/v1/tenants",le="+Inf"} 1`,
		`cvlan_api_request_duration_seconds_count{route="POST /api/v1/tenants"} 1`,
		`cvlan_objects{kind="network"} 1`,
		`cvlan_objects{kind="tenant"} 1`,
		`cvlan_objects{kind="token"} 1`,
	} {
		if !strings.Contains(string(r.raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
