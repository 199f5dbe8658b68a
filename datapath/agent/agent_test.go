package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
)

func validConfig() Config {
	c := DefaultConfig()
	c.Controller = "https://10.0.0.1:8443"
	p, _ := key.NewPrivate()
	c.ControllerKey = p.MachinePublic()
	c.StateDir = "/tmp/x"
	return c
}

func TestConfigValidate(t *testing.T) {
	if err := (func() *Config { c := validConfig(); return &c })().Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := []struct {
		want string
		mod  func(*Config)
	}{
		{"controller: required", func(c *Config) { c.Controller = "" }},
		{"not an https:// URL", func(c *Config) { c.Controller = "http://x" }},
		{"not an https:// URL", func(c *Config) { c.Controller = "https://" }},
		{"controller-key: required", func(c *Config) { c.ControllerKey = key.MachinePublic{} }},
		{"state-dir", func(c *Config) { c.StateDir = "" }},
		{"interface", func(c *Config) { c.Interface = "much-too-long-name" }},
		{"interface", func(c *Config) { c.Interface = "a/b" }},
		{"listen-port", func(c *Config) { c.ListenPort = 70000 }},
		{"wireguard", func(c *Config) { c.WireGuard = "magic" }},
		{"metrics-listen", func(c *Config) { c.MetricsListen = "nope" }},
		{"max-backoff", func(c *Config) { c.MaxBackoff = -time.Second }},
		{"enroll-key", func(c *Config) { c.EnrollKey = "ek_a b" }},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error naming %q", err, tc.want)
		}
	}
}

func TestStateDir(t *testing.T) {
	d := stateDir(filepath.Join(t.TempDir(), "state"))
	m1, n1, err := d.keys()
	if err != nil {
		t.Fatal(err)
	}
	m2, n2, err := d.keys()
	if err != nil || m1.Raw() != m2.Raw() || n1.Raw() != n2.Raw() {
		t.Fatalf("keys changed across loads: %v", err)
	}
	fi, err := os.Stat(string(d))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	if id, err := d.identity(); err != nil || id.Enrolled {
		t.Fatalf("fresh identity: %+v %v", id, err)
	}
	if m, err := d.savedMap(); err != nil || m != nil {
		t.Fatalf("fresh map: %v %v", m, err)
	}
	raw := n1.NodePublic().Raw()
	m, err := netmap.FromProto(&controlpb.NetworkMap{Seq: 4, Self: &controlpb.Self{NodeId: "nd_a", Mtu: 1420, NodeKey: raw[:], Addresses: []string{"100.64.0.1/32"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.saveIdentity(identity{NodeID: "nd_a", Name: "a", Enrolled: true}); err != nil {
		t.Fatal(err)
	}
	if err := d.saveMap(m); err != nil {
		t.Fatal(err)
	}
	back, err := d.savedMap()
	if err != nil || back.Seq != 4 || back.Self.NodeID != "nd_a" {
		t.Fatalf("saved map: %+v %v", back, err)
	}
	for _, f := range []string{machineKeyFile, nodeKeyFile, identityFile, mapFile} {
		fi, err := os.Stat(d.path(f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode(), err)
		}
	}
	if err := os.WriteFile(d.path(mapFile), []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.savedMap(); err == nil || !strings.Contains(err.Error(), mapFile) {
		t.Fatalf("a corrupt saved map: %v, want an error naming the file", err)
	}
	if err := d.forget(); err != nil {
		t.Fatal(err)
	}
	if id, _ := d.identity(); id.Enrolled {
		t.Fatal("forget kept the identity")
	}
	if _, _, err := d.keys(); err != nil {
		t.Fatal("forget removed the keys")
	}
}

func TestLocalEndpoints(t *testing.T) {
	eps := localEndpoints("cvlan0", 51820)
	for i, e := range eps {
		if e.Port() != 51820 || e.Addr().IsLoopback() || e.Addr().IsLinkLocalUnicast() {
			t.Errorf("endpoint %s should not be reported", e)
		}
		if i > 0 && eps[i-1].Addr().Is6() && e.Addr().Is4() {
			t.Errorf("IPv4 endpoint %s after IPv6 %s", e, eps[i-1])
		}
	}
}
