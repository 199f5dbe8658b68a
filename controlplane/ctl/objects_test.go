package ctl

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
)

func TestTenantRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.login()

	var ten model.Tenant
	h.jsonOf(&ten, "tenant", "create", "acme", "--description", "first")
	if ten.Name != "acme" || ten.Description != "first" || !strings.HasPrefix(ten.ID, model.PrefixTenant) {
		t.Fatalf("created %+v", ten)
	}
	if out := h.ok("tenant", "list"); !strings.Contains(out, "acme") || !strings.Contains(out, ten.ID) || !strings.HasPrefix(out, "NAME") {
		t.Errorf("tenant list:\n%s", out)
	}
	var got model.Tenant
	h.jsonOf(&got, "tenant", "get", ten.ID)
	if got != ten {
		t.Errorf("get by id = %+v, want %+v", got, ten)
	}
	h.jsonOf(&got, "tenant", "update", "acme", "--name", "acme2", "--description", "")
	if got.Name != "acme2" || got.Description != "" || got.ID != ten.ID {
		t.Errorf("updated %+v", got)
	}
	if out := h.ok("tenant", "delete", "acme2"); !strings.Contains(out, "deleted") {
		t.Errorf("delete printed %q", out)
	}
	_, err := h.api().GetTenant(context.Background(), ten.ID)
	if errs := h.fail(1, "tenant", "get", ten.ID); errs != apiMessage(t, err) {
		t.Errorf("get after delete: %q, want the API's %q", errs, apiMessage(t, err))
	}
}

func TestNetworkRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")

	var n model.Network
	h.jsonOf(&n, "-t", "acme", "network", "create", "office", "--ipv4", "100.64.0.0/24", "--ipv6", "fd00:64::/64", "--mtu", "1380", "--description", "hq")
	if n.Name != "office" || n.IPv4.String() != "100.64.0.0/24" || n.IPv6.String() != "fd00:64::/64" || n.MTU != 1380 {
		t.Fatalf("created %+v", n)
	}

	// -o json prints the whole list as one JSON array of API objects.
	var nets []model.Network
	h.jsonOf(&nets, "-t", "acme", "network", "list")
	if len(nets) != 1 || nets[0] != n {
		t.Errorf("-o json network list = %+v, want [%+v]", nets, n)
	}

	// -o yaml carries the same fields under their JSON names.
	out := h.ok("-o", "yaml", "--tenant", "acme", "network", "list")
	var docs []map[string]any
	if err := yaml.Unmarshal([]byte(out), &docs); err != nil {
		t.Fatalf("-o yaml does not parse: %v\n%s", err, out)
	}
	if len(docs) != 1 || docs[0]["name"] != "office" || docs[0]["ipv4"] != "100.64.0.0/24" || docs[0]["mtu"] != 1380 || docs[0]["id"] != n.ID {
		t.Errorf("-o yaml network list:\n%s", out)
	}

	table := h.ok("-t", "acme", "network", "list")
	for _, want := range []string{"NAME", "ID", "IPV4", "IPV6", "MTU", "office", n.ID, "100.64.0.0/24", "fd00:64::/64", "1380"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	// An overlapping network: the server's message, which names the field, as is.
	_, err := h.api().CreateNetwork(context.Background(), "acme", apiv1.CreateNetwork{Name: "lab", IPv4: "100.64.0.128/25"})
	if !apiclient.IsStatus(err, 409) {
		t.Fatalf("overlap through the API: %v, want 409", err)
	}
	errs := h.fail(1, "-t", "acme", "network", "create", "lab", "--ipv4", "100.64.0.128/25")
	if errs != apiMessage(t, err) || !strings.Contains(errs, "ipv4") {
		t.Errorf("overlap: stderr %q, want the API's %q", errs, apiMessage(t, err))
	}

	t.Setenv("CVLAN_TENANT", "acme")
	h.jsonOf(&n, "network", "update", "office", "--mtu", "1400", "--name", "hq")
	if n.MTU != 1400 || n.Name != "hq" {
		t.Errorf("updated %+v", n)
	}
	h.ok("network", "get", "hq")
	h.ok("network", "delete", n.ID)
	h.jsonOf(&nets, "network", "list")
	if len(nets) != 0 {
		t.Errorf("after delete: %+v", nets)
	}
	if out := h.ok("-o", "json", "network", "list"); strings.TrimSpace(out) != "[]" {
		t.Errorf("empty list prints %q, want []", out)
	}
}

func TestKeyCreatePrintsSecretAndJoinCommand(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")
	h.ok("-t", "acme", "network", "create", "prod", "--ipv4", "100.64.0.0/24")

	out := h.ok("-t", "acme", "key", "create", "--network", "prod", "--tags", "lab,ci", "--expiry", "1h", "--description", "ci")
	join := "cvlan-agent up --controller " + h.ctl.URL + " --controller-key " + h.ctl.NoisePublicKey + " --enroll-key "
	i := strings.Index(out, join)
	if i < 0 || !strings.Contains(out, "Secret") {
		t.Fatalf("key create printed no secret or join command:\n%s", out)
	}
	secret := strings.Fields(out[i+len(join):])[0]

	// The secret enrolls a machine.
	var mk, nk [key.Len]byte
	rand.Read(mk[:])
	rand.Read(nk[:])
	enrolled, err := h.api().Enroll(context.Background(), apiv1.Enroll{
		Key: secret, Name: "laptop",
		MachineKey: key.MachinePublicFromRaw(mk).String(), NodeKey: key.NodePublicFromRaw(nk).String(),
	})
	if err != nil {
		t.Fatalf("enrolling with the printed secret: %v", err)
	}
	if !slices.Equal(enrolled.Node.Tags, []string{"lab", "ci"}) {
		t.Errorf("enrolled node tags %v", enrolled.Node.Tags)
	}

	// -o json: the key with its secret and the join command.
	var ck struct {
		apiv1.CreatedEnrollmentKey
		JoinCommand string `json:"join_command"`
	}
	h.jsonOf(&ck, "-t", "acme", "key", "create", "--network", "prod", "--reusable", "--max-uses", "3", "--ephemeral")
	if ck.Secret == "" || !ck.Reusable || ck.MaxUses != 3 || !ck.Ephemeral || ck.JoinCommand != join+ck.Secret {
		t.Errorf("-o json key create = %+v", ck)
	}

	var keys []model.EnrollmentKey
	h.jsonOf(&keys, "-t", "acme", "key", "list")
	if len(keys) != 2 {
		t.Fatalf("key list: %+v", keys)
	}
	if out := h.ok("-t", "acme", "key", "list"); strings.Contains(out, ck.Secret) {
		t.Error("key list shows a secret")
	}
	var k model.EnrollmentKey
	h.jsonOf(&k, "-t", "acme", "key", "update", ck.ID, "--tags", "edge", "--description", "edge nodes", "--expiry", "2h")
	if !slices.Equal(k.Tags, []string{"edge"}) || k.Description != "edge nodes" || !k.ExpiresAt.Before(ck.ExpiresAt) {
		t.Errorf("updated %+v (was expiring %v)", k, ck.ExpiresAt)
	}
	h.jsonOf(&k, "-t", "acme", "key", "get", ck.ID)
	h.ok("-t", "acme", "key", "delete", ck.ID)
	h.fail(1, "-t", "acme", "key", "get", ck.ID)
}

func TestNodeRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")
	t.Setenv("CVLAN_TENANT", "acme")
	h.ok("network", "create", "a", "--ipv4", "100.64.0.0/24")
	h.ok("network", "create", "b", "--ipv4", "100.64.1.0/24")

	var n model.Node
	h.jsonOf(&n, "node", "create", "gw1", "--network", "a", "--kind", "gateway", "--tags", "edge,dc", "--routes", "10.0.0.0/8")
	if n.Kind != model.KindGateway || !slices.Equal(n.Tags, []string{"edge", "dc"}) || len(n.Routes) != 1 || !n.IPv4.IsValid() {
		t.Fatalf("created %+v", n)
	}
	h.ok("node", "create", "b1", "--network", "b")

	var nodes []model.Node
	h.jsonOf(&nodes, "node", "list")
	if len(nodes) != 2 {
		t.Errorf("node list: %d nodes", len(nodes))
	}
	h.jsonOf(&nodes, "node", "list", "--network", "b")
	if len(nodes) != 1 || nodes[0].Name != "b1" {
		t.Errorf("node list --network b: %+v", nodes)
	}
	h.jsonOf(&n, "node", "update", "gw1", "--tags", "", "--routes", "10.1.0.0/16,10.2.0.0/16")
	if len(n.Tags) != 0 || len(n.Routes) != 2 {
		t.Errorf("updated %+v", n)
	}
	if out := h.ok("node", "get", "gw1"); !strings.Contains(out, "10.1.0.0/16,10.2.0.0/16") || !strings.Contains(out, n.IPv4.String()) {
		t.Errorf("node get:\n%s", out)
	}
	h.ok("node", "delete", "gw1")
	h.jsonOf(&nodes, "node", "list")
	if len(nodes) != 1 {
		t.Errorf("after delete: %+v", nodes)
	}
}

func TestTokensAndViewerCannotWrite(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")

	var tok apiv1.CreatedToken
	h.jsonOf(&tok, "token", "create", "--role", "tenant-viewer", "--tenant", "acme", "--description", "dash", "--expiry", "24h")
	if tok.Secret == "" || tok.Role != model.RoleTenantViewer || tok.TenantID == "" || tok.ExpiresAt.IsZero() {
		t.Fatalf("created %+v", tok)
	}
	if out := h.ok("token", "create", "--role", "operator"); !strings.Contains(out, "Secret (shown once") {
		t.Errorf("token create table output:\n%s", out)
	}

	var toks []model.Token
	h.jsonOf(&toks, "token", "list")
	if !slices.ContainsFunc(toks, func(x model.Token) bool { return x.ID == tok.ID }) {
		t.Errorf("token list lacks %s", tok.ID)
	}
	var got model.Token
	h.jsonOf(&got, "token", "update", tok.ID, "--description", "dashboard")
	if got.Description != "dashboard" {
		t.Errorf("updated %+v", got)
	}
	h.jsonOf(&got, "token", "get", tok.ID)

	// The viewer reads but cannot write; the refusal is the server's text.
	viewer, _ := apiclient.New(apiclient.Config{Server: h.ctl.URL, Token: tok.Secret, Fingerprint: h.ctl.Fingerprint})
	_, err := viewer.CreateNetwork(context.Background(), "acme", apiv1.CreateNetwork{Name: "x", IPv4: "100.64.0.0/24"})
	if !apiclient.IsStatus(err, 403) {
		t.Fatalf("viewer create through the API: %v, want 403", err)
	}
	t.Setenv("CVLAN_TOKEN", tok.Secret)
	h.ok("-t", "acme", "network", "list")
	if errs := h.fail(1, "-t", "acme", "network", "create", "x", "--ipv4", "100.64.0.0/24"); errs != apiMessage(t, err) {
		t.Errorf("viewer create: %q, want the API's %q", errs, apiMessage(t, err))
	}

	t.Setenv("CVLAN_TOKEN", "")
	h.ok("token", "delete", tok.ID)
	t.Setenv("CVLAN_TOKEN", tok.Secret)
	h.fail(1, "-t", "acme", "network", "list")
}

func TestPolicy(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")
	t.Setenv("CVLAN_TENANT", "acme")

	h.fail(1, "policy", "get")
	file := filepath.Join(t.TempDir(), "policy.txt")
	if err := os.WriteFile(file, []byte("rules: [{src: [a], dst: [b]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var p model.Policy
	h.jsonOf(&p, "policy", "set", "-f", file)
	if p.Document != "rules: [{src: [a], dst: [b]}]\n" {
		t.Fatalf("set %+v", p)
	}
	v1 := p.Version
	if out := h.ok("policy", "get"); out != "rules: [{src: [a], dst: [b]}]\n" {
		t.Errorf("policy get printed %q", out)
	}
	if out := h.ok("policy", "get", "--version-only"); strings.TrimSpace(out) != itoa(v1) {
		t.Errorf("--version-only printed %q, want %d", out, v1)
	}

	// From stdin, naming the version read: a read-modify-write.
	h.stdin = "rules: [{src: [a], dst: [c]}]\n"
	h.jsonOf(&p, "policy", "set", "-f", "-", "--version", itoa(v1))
	if p.Version <= v1 || p.Document != "rules: [{src: [a], dst: [c]}]\n" {
		t.Fatalf("second set %+v", p)
	}

	// A stale version is refused with the server's message.
	stale := v1
	_, err := h.api().PutPolicy(context.Background(), "acme", apiv1.PutPolicy{Document: "x", Version: &stale})
	if !apiclient.IsStatus(err, 409) {
		t.Fatalf("stale version through the API: %v, want 409", err)
	}
	if errs := h.fail(1, "policy", "set", "-f", file, "--version", itoa(v1)); errs != apiMessage(t, err) {
		t.Errorf("stale set: %q, want the API's %q", errs, apiMessage(t, err))
	}

	// policy test exits 1 on deny and names what decided; bad arguments are usage errors.
	if out, errs, code := h.run("policy", "test", "100.64.0.1", "100.64.0.2", "22/tcp"); code != 1 || errs != "" || !strings.HasPrefix(out, "deny: 100.64.0.1 -> 100.64.0.2 22/tcp") {
		t.Errorf("policy test of a denied flow: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	h.fail(2, "policy", "test", "a", "b", "22")
	h.fail(2, "policy", "test", "a", "b", "99999/tcp")
	h.fail(1, "policy", "test", "nosuchnode", "100.64.0.2", "22/tcp")

	var hist []model.Policy
	h.jsonOf(&hist, "policy", "history")
	if len(hist) != 2 || hist[0].Version != p.Version {
		t.Errorf("history %+v", hist)
	}
	h.ok("policy", "delete")
	h.jsonOf(&hist, "policy", "history")
	if len(hist) != 3 || hist[0].Document != "" {
		t.Errorf("history after delete %+v", hist)
	}
}

func TestRelaysSitesAudit(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")
	t.Setenv("CVLAN_TENANT", "acme")

	var r model.Relay
	h.jsonOf(&r, "relay", "create", "fra1", "--region", "eu-central", "--public-addr", "203.0.113.7",
		"--udp-port-min", "40000", "--udp-port-max", "40999", "--stun-port", "3478", "--tls-url", "https://fra1.example")
	if r.Name != "fra1" || r.UDPPortMax != 40999 || r.STUNPort != 3478 {
		t.Fatalf("relay %+v", r)
	}
	h.jsonOf(&r, "relay", "update", "fra1", "--region", "eu-west", "--udp-port-max", "41999")
	if r.Region != "eu-west" || r.UDPPortMax != 41999 || r.UDPPortMin != 40000 {
		t.Errorf("updated relay %+v", r)
	}
	if out := h.ok("relay", "list"); !strings.Contains(out, "40000-41999") {
		t.Errorf("relay list:\n%s", out)
	}
	h.ok("relay", "delete", "fra1")

	h.ok("network", "create", "prod", "--ipv4", "100.64.0.0/24")
	h.ok("node", "create", "vr1", "--network", "prod", "--kind", "vrouter")
	psk := filepath.Join(t.TempDir(), "psk")
	if err := os.WriteFile(psk, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var s model.IPsecSite
	h.jsonOf(&s, "site", "create", "branch", "--vrouter-node", "vr1", "--remote-addr", "198.51.100.4",
		"--local-id", "vr1.acme", "--remote-id", "branch.acme", "--auth-method", "psk", "--psk-file", psk,
		"--local-subnets", "100.64.0.0/24", "--remote-subnets", "192.168.10.0/24",
		"--ike-proposals", "aes256-sha256-modp2048", "--esp-proposals", "aes256gcm16")
	if s.Name != "branch" || s.AuthMethod != "psk" || len(s.RemoteSubnets) != 1 {
		t.Fatalf("site %+v", s)
	}
	h.jsonOf(&s, "site", "update", "branch", "--remote-addr", "198.51.100.5")
	if s.RemoteAddr != "198.51.100.5" || s.LocalID != "vr1.acme" {
		t.Errorf("updated site %+v", s)
	}
	if out := h.ok("site", "list"); !strings.Contains(out, "192.168.10.0/24") {
		t.Errorf("site list:\n%s", out)
	}
	h.ok("site", "delete", "branch")

	var entries []model.AuditEntry
	h.jsonOf(&entries, "audit")
	if len(entries) == 0 || entries[0].Kind != "ipsec_site" || entries[0].Action != model.ActionDelete {
		t.Errorf("tenant audit, newest first: %+v", entries)
	}
	h.jsonOf(&entries, "audit", "--all", "--limit", "0")
	if !slices.ContainsFunc(entries, func(e model.AuditEntry) bool { return e.Kind == "relay" }) {
		t.Errorf("audit --all lacks the relay changes: %+v", entries)
	}
	h.jsonOf(&entries, "audit", "--all", "--limit", "2")
	if len(entries) != 2 {
		t.Errorf("audit --limit 2: %d entries", len(entries))
	}
}
