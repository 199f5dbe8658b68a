package api_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/controlplane/apiv1"
)

// fuzzRoutes are the write routes FuzzAPI sends bodies to, each with a body it
// accepts; {secret} is an enrollment key's secret.
var fuzzRoutes = []struct{ method, path, body string }{
	{"POST", "/tenants", `{"name":"t2","description":"d"}`},
	{"POST", "/tenants/acme/networks", `{"name":"n2","ipv4":"10.9.0.0/24","ipv6":"fd00:9::/64","mtu":1400}`},
	{"POST", "/tenants/acme/nodes", `{"name":"n2","network":"lan","kind":"gateway","tags":["a"],"routes":["10.50.0.0/16"]}`},
	{"POST", "/tenants/acme/keys", `{"network":"lan","reusable":true,"max_uses":3,"expires_in":"1h"}`},
	{"POST", "/tokens", `{"role":"tenant-viewer","tenant":"acme","expires_in":"1h"}`},
	{"POST", "/relays", `{"name":"r2","region":"eu","public_addr":"192.0.2.2","udp_port_min":1,"udp_port_max":9,"tls_url":"https://r2.example.com"}`},
	{"POST", "/tenants/acme/sites", `{"name":"s2","vrouter_node":"gw","remote_addr":"192.0.2.9","auth_method":"psk","psk":"0123456789abcdef","local_subnets":["10.1.0.0/16"],"remote_subnets":["10.2.0.0/16"]}`},
	{"POST", "/enroll", `{"key":"{secret}","name":"m","machine_key":"{mkey}","node_key":"{nkey}"}`},
	{"PUT", "/tenants/acme/policy", `{"document":"rules: [{src: ['*'], dst: ['*']}]","version":1}`},
	{"PATCH", "/tenants/acme/networks/lan", `{"name":"lan2","mtu":1300}`},
	{"PATCH", "/tenants/acme/nodes/gw", `{"tags":["x"],"routes":["10.60.0.0/16"],"node_key":"{nkey}"}`},
	{"PATCH", "/tenants/acme/keys/{key}", `{"expires_at":"2099-01-01T00:00:00Z"}`},
	{"PATCH", "/tenants/acme/sites/hq", `{"auth_method":"cert","certificate":"PEM"}`},
}

// FuzzAPI sends fuzzed bodies to write routes of a live controller: whatever the
// body, the answer is never a 5xx, and every error answer is an error body.
func FuzzAPI(f *testing.F) {
	e := start(f)
	fx := e.seed(f, "acme", 1)
	vars := map[string]string{"secret": fx.KeySecret, "key": fx.KeyID, "mkey": machineKey(), "nkey": nodeKey()}
	h := e.Server.Config.Handler
	for i, r := range fuzzRoutes {
		f.Add(uint8(i), []byte(expand(r.body, vars)))
		f.Add(uint8(i), []byte(r.body))
		f.Add(uint8(i), []byte(strings.Replace(r.body, `"`, `'`, 1)))
	}
	f.Add(uint8(0), []byte(`{"name":"a\u0000b"}`))
	f.Add(uint8(1), []byte(`{"name":"n3","ipv4":"0.0.0.0/8"}`))
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req := httptest.NewRequest(r.method, apiv1.Prefix+expand(r.path, vars), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.op)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q = %d %s", r.method, r.path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var b apiv1.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || b.Error == "" {
				t.Fatalf("%s %s %q = %d with body %s", r.method, r.path, body, rec.Code, rec.Body)
			}
		}
	})
}
