package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/controltest"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/store"
)

// env is a running in-process controller and a client that trusts it.
type env struct {
	*controltest.Controller
	client *http.Client
	op     string // the operator token's secret
}

func start(t testing.TB) *env { return startWith(t, controltest.Options{}) }

func startWith(t testing.TB, opts controltest.Options) *env {
	t.Helper()
	c := controltest.StartWith(t, opts)
	return &env{Controller: c, client: c.Server.Client(), op: c.OperatorToken}
}

// clock is a controller clock that tests move forward.
type clock struct{ off atomic.Int64 }

func (c *clock) now() time.Time            { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) advance(d time.Duration)   { c.off.Add(int64(d)) }
func (c *clock) opts() controltest.Options { return controltest.Options{Now: c.now} }

// obj is a decoded JSON object answer.
type obj map[string]any

// get follows a dotted path ("node.id", "items.0.name"); nil when absent.
func (o obj) get(path string) any {
	var v any = map[string]any(o)
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// str is get as a string ("" when absent or not a string).
func (o obj) str(path string) string { s, _ := o.get(path).(string); return s }

// items is the items of a list answer.
func (o obj) items() []obj {
	raw, _ := o["items"].([]any)
	out := make([]obj, 0, len(raw))
	for _, v := range raw {
		m, _ := v.(map[string]any)
		out = append(out, obj(m))
	}
	return out
}

// names is the given field of every item of a list answer.
func (o obj) names(field string) []string {
	var out []string
	for _, it := range o.items() {
		out = append(out, it.str(field))
	}
	return out
}

// reply is everything a test may check of an answer.
type reply struct {
	code int
	hdr  http.Header
	body obj // nil unless the answer is a JSON object
	raw  []byte
}

// call sends one request. Paths are under /api/v1 unless they are /healthz or
// /metrics. body is sent as is when it is a string or []byte, as JSON otherwise, and
// not at all when nil. hdr holds extra header name/value pairs.
func (e *env) call(t testing.TB, method, path, token string, body any, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encoding body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	if path != "/healthz" && path != "/metrics" {
		path = apiv1.Prefix + path
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading answer: %v", method, path, err)
	}
	r := reply{code: resp.StatusCode, hdr: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil && raw[0] == '{' {
			t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, path, err, raw)
		}
	}
	return r
}

// do is call answering only the status and the decoded body.
func (e *env) do(t testing.TB, method, path, token string, body any) (int, obj) {
	t.Helper()
	r := e.call(t, method, path, token, body)
	return r.code, r.body
}

// must is do that fails the test unless the status is want.
func (e *env) must(t testing.TB, want int, method, path, token string, body any) obj {
	t.Helper()
	code, b := e.do(t, method, path, token, body)
	if code != want {
		t.Fatalf("%s %s = %d, want %d: %v", method, path, code, want, b)
	}
	return b
}

// wantError checks an error answer: its status, a message, and the field it names.
func wantError(t testing.TB, what string, r reply, code int, field string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s = %d, want %d: %s", what, r.code, code, r.raw)
		return
	}
	if r.body.str("error") == "" {
		t.Errorf("%s: error body without a message: %s", what, r.raw)
	}
	if got := r.body.str("field"); got != field {
		t.Errorf("%s: field = %q, want %q (%s)", what, got, field, r.body.str("error"))
	}
	if code == http.StatusUnauthorized && r.hdr.Get("WWW-Authenticate") == "" {
		t.Errorf("%s: 401 without WWW-Authenticate", what)
	}
}

// machineKey and nodeKey are fresh random public keys in text form.
func machineKey() string { return key.MachinePublicFromRaw(randomKey()).String() }
func nodeKey() string    { return key.NodePublicFromRaw(randomKey()).String() }

func randomKey() [key.Len]byte {
	var b [key.Len]byte
	rand.Read(b[:])
	return b
}

// fixture is a tenant with one of everything, made through the API.
type fixture struct {
	ID, Name         string
	NetworkID        string // network "lan"
	NodeID           string // vrouter node "gw"
	KeyID, KeySecret string // a reusable enrollment key
	SiteID           string // IPsec site "hq"
	Admin, Viewer    string // token secrets
	AdminID          string
	ViewerID         string
}

// seed makes tenant name with network lan (10.<octet>.0.0/24, fd00:<octet>::/64), a
// vrouter node gw, a reusable key, a site hq, a policy and admin and viewer tokens.
func (e *env) seed(t testing.TB, name string, octet int) *fixture {
	t.Helper()
	f := &fixture{Name: name}
	f.ID = e.must(t, 201, "POST", "/tenants", e.op, apiv1.CreateTenant{Name: name}).str("id")
	tp := "/tenants/" + name
	f.NetworkID = e.must(t, 201, "POST", tp+"/networks", e.op, apiv1.CreateNetwork{
		Name: "lan", IPv4: fmt.Sprintf("10.%d.0.0/24", octet), IPv6: fmt.Sprintf("fd00:%d::/64", octet)}).str("id")
	f.NodeID = e.must(t, 201, "POST", tp+"/nodes", e.op, apiv1.CreateNode{
		Name: "gw", Network: "lan", Kind: "vrouter", MachineKey: machineKey(), NodeKey: nodeKey()}).str("id")
	k := e.must(t, 201, "POST", tp+"/keys", e.op, apiv1.CreateEnrollmentKey{Network: "lan", Reusable: true})
	f.KeyID, f.KeySecret = k.str("id"), k.str("secret")
	f.SiteID = e.must(t, 201, "POST", tp+"/sites", e.op, siteBody("hq", "gw")).str("id")
	e.must(t, 200, "PUT", tp+"/policy", e.op, `{"document":"rules: [{src: ['*'], dst: ['*']}]","version":0}`)
	a := e.must(t, 201, "POST", "/tokens", e.op, apiv1.CreateToken{Role: "tenant-admin", Tenant: name})
	v := e.must(t, 201, "POST", "/tokens", e.op, apiv1.CreateToken{Role: "tenant-viewer", Tenant: name})
	f.Admin, f.AdminID, f.Viewer, f.ViewerID = a.str("secret"), a.str("id"), v.str("secret"), v.str("id")
	return f
}

func siteBody(name, vrouter string) apiv1.Site {
	return apiv1.Site{Name: name, VRouterNode: vrouter, RemoteAddr: "198.51.100.7", AuthMethod: "psk",
		PSK: "0123456789abcdef0123", LocalSubnets: []string{"10.200.0.0/16"}, RemoteSubnets: []string{"192.168.0.0/24"}}
}

// world is everything the controller holds, as JSON, plus the number of audit
// entries: two equal worlds mean no write happened in between.
type world struct {
	state string
	audit int
}

func (e *env) world(t testing.TB) world {
	t.Helper()
	w := e.State.World()
	all := map[string]any{"tenants": w.Tenants.All(), "relays": w.Relays.All(), "tokens": w.Tokens.All()}
	for _, tn := range w.Tenants.All() {
		st := w.Tenant(tn.ID)
		all[tn.ID] = []any{st.Networks.All(), st.Nodes.All(), st.Keys.All(), st.Sites.All(), st.Policy}
	}
	data, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	return world{state: string(data), audit: e.auditLen(t)}
}

func (e *env) auditLen(t testing.TB) int {
	t.Helper()
	n, before := 0, ""
	for {
		es, err := e.Store.AuditLog(context.Background(), store.AuditQuery{Before: before, Limit: 1000})
		if err != nil {
			t.Fatalf("reading audit log: %v", err)
		}
		n += len(es)
		if len(es) < 1000 {
			return n
		}
		before = es[len(es)-1].ID
	}
}

// unchanged fails the test if anything was written since before.
func (e *env) unchanged(t testing.TB, what string, before world) {
	t.Helper()
	after := e.world(t)
	if after.audit != before.audit {
		t.Errorf("%s: audit log grew from %d to %d entries", what, before.audit, after.audit)
	}
	if after.state != before.state {
		t.Errorf("%s: state changed:\nbefore %s\nafter  %s", what, before.state, after.state)
	}
}

// bug skips the test when cond holds, naming a bug in non-test code: the test states
// the wanted behaviour, and enforces it once the bug is fixed.
func bug(t testing.TB, cond bool, format string, args ...any) {
	t.Helper()
	if cond {
		t.Skipf("BUG: "+format, args...)
	}
}
