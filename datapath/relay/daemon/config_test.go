package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

const fullYAML = `
data_dir: /srv/relay
controller:
  url: https://ctl.example:8443
  key: mkey:0101010101010101010101010101010101010101010101010101010101010101
relay_address: 203.0.113.10
udp:
  xdp: native
  interfaces: [eth0, eth1]
  idle_timeout: 90s
framed:
  listen: ":8443"
  tls_cert: /etc/relay/tls.crt
  tls_key: /etc/relay/tls.key
  tls_names:
    - relay1.example.com
    - 203.0.113.10
  drain_grace: 7s
stun:
  listen: "203.0.113.10:3478"
metrics:
  listen: "127.0.0.1:9200"
log:
  format: json
  level: debug
`

func TestLoadYAMLFull(t *testing.T) {
	c := DefaultConfig()
	if err := c.LoadYAML("relay.yaml", []byte(fullYAML)); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Config{
		DataDir:       "/srv/relay",
		RelayAddress:  netip.MustParseAddr("203.0.113.10"),
		XDP:           xdprelay.ModeNative,
		Interfaces:    []string{"eth0", "eth1"},
		IdleTimeout:   90 * time.Second,
		FramedListen:  ":8443",
		TLSCert:       "/etc/relay/tls.crt",
		TLSKey:        "/etc/relay/tls.key",
		TLSNames:      []string{"relay1.example.com", "203.0.113.10"},
		DrainGrace:    7 * time.Second,
		STUNListen:    "203.0.113.10:3478",
		MetricsListen: "127.0.0.1:9200",
		ControllerURL: "https://ctl.example:8443",
		ControllerKey: key.MachinePublicFromRaw([32]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}),
		LogFormat:     "json",
		LogLevel:      "debug",
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestDefaults(t *testing.T) {
	c := DefaultConfig()
	if err := c.LoadYAML("relay.yaml", []byte("relay_address: 192.0.2.1\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.STUNListen != ":3478" || c.MetricsListen != "127.0.0.1:9102" || c.DrainGrace != 5*time.Second ||
		c.XDP != xdprelay.ModeAuto || c.DataDir != DefaultDataDir || c.FramedListen != ":443" {
		t.Fatalf("defaults: %+v", c)
	}
	// An empty file and a file of comments change nothing.
	for _, doc := range []string{"", "# nothing\n", "---\n"} {
		d := DefaultConfig()
		if err := d.LoadYAML("relay.yaml", []byte(doc)); err != nil {
			t.Errorf("%q: %v", doc, err)
		}
		if !reflect.DeepEqual(d, DefaultConfig()) {
			t.Errorf("%q changed the defaults: %+v", doc, d)
		}
	}
}

func TestLoadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(fullYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/relay" {
		t.Fatalf("data_dir %q", c.DataDir)
	}
	if err := c.LoadFile(p + ".missing"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestYAMLErrors checks that every YAML error names the key (or what is wrong).
func TestYAMLErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"relay_adress: 1.2.3.4\n", "line 1: unknown key relay_adress"},
		{"udp:\n  xpd: off\n", "line 2: unknown key udp.xpd"},
		{"udp:\n  xdp: fast\n", "line 2: udp.xdp: unknown XDP mode"},
		{"udp:\n  idle_timeout: 3 minutes\n", "udp.idle_timeout: \"3 minutes\" is not a duration"},
		{"framed:\n  drain_grace: [1]\n", "framed.drain_grace: must be a single value"},
		{"udp:\n  interfaces: eth0\n", ""}, // a comma-separated string is fine
		{"udp:\n  interfaces: {a: b}\n", "udp.interfaces: must be a list"},
		{"udp:\n  interfaces: [[eth0]]\n", "udp.interfaces: list items"},
		{"udp:\n  interfaces: [\"\"]\n", "udp.interfaces: list items"},
		{"relay_address: not-an-ip\n", "line 1: relay_address: \"not-an-ip\" is not an IP address"},
		{"udp: eth0\n", "line 1: udp must be a mapping"},
		{"- a\n- b\n", "the top level must be a mapping"},
		{"log:\n  level: info\n  level: debug\n", "log.level: set twice"},
		{"a: &x 1\nlog:\n  level: *x\n", "unknown key a"},
		{"log:\n  level: *x\n", "config relay.yaml:"},
		{"log:\n  format: &x json\n  level: *x\n", "line 3: log.level: YAML aliases are not supported"},
		{"data_dir: /a\n---\ndata_dir: /b\n", "one YAML document expected"},
		{"data_dir: [\n", "config relay.yaml:"},
		{"stun:\n  listen:\n    port: 1\n", "stun.listen: must be a single value"},
		{"controller:\n  key: nope\n", "line 2: controller.key: \"nope\" is not a controller key"},
	} {
		c := DefaultConfig()
		err := c.LoadYAML("relay.yaml", []byte(tc.yaml))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.yaml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

// TestValidate is a table of bad values; each error names its setting.
func TestValidate(t *testing.T) {
	ok := func() Config {
		c := DefaultConfig()
		c.RelayAddress = netip.MustParseAddr("192.0.2.1")
		return c
	}
	if c := ok(); c.Validate() != nil {
		t.Fatalf("base config invalid: %v", c.Validate())
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"controller.key", func(c *Config) { c.ControllerURL = "https://ctl.example" }},
		{"controller.url", func(c *Config) { c.ControllerKey = key.MachinePublicFromRaw([32]byte{1}) }},
		{"controller.url", func(c *Config) {
			c.ControllerURL, c.ControllerKey = "http://ctl.example", key.MachinePublicFromRaw([32]byte{1})
		}},
		{"relay_address", func(c *Config) { c.RelayAddress = netip.Addr{} }},
		{"relay_address", func(c *Config) { c.RelayAddress = netip.MustParseAddr("2001:db8::1") }},
		{"relay_address", func(c *Config) { c.RelayAddress = netip.MustParseAddr("0.0.0.0") }},
		{"relay_address", func(c *Config) { c.RelayAddress = netip.MustParseAddr("224.0.0.1") }},
		{"udp.xdp", func(c *Config) { c.XDP = "fast" }},
		{"udp.interfaces", func(c *Config) { c.XDP = xdprelay.ModeNative }},
		{"udp.interfaces", func(c *Config) { c.XDP = xdprelay.ModeGeneric }},
		{"udp.interfaces[1]", func(c *Config) { c.Interfaces = []string{"eth0", ""} }},
		{"udp.interfaces[0]", func(c *Config) { c.Interfaces = []string{"a-very-long-interface-name"} }},
		{"udp.idle_timeout", func(c *Config) { c.IdleTimeout = 0 }},
		{"framed.listen", func(c *Config) { c.FramedListen = "443" }},
		{"framed.listen", func(c *Config) { c.FramedListen = "" }},
		{"stun.listen", func(c *Config) { c.STUNListen = "localhost" }},
		{"metrics.listen", func(c *Config) { c.MetricsListen = "127.0.0.1:" }},
		{"framed.tls_key", func(c *Config) { c.TLSCert = "/a.crt" }},
		{"framed.tls_key", func(c *Config) { c.TLSKey = "/a.key" }},
		{"framed.tls_names[0]", func(c *Config) { c.TLSNames = []string{""} }},
		{"framed.drain_grace", func(c *Config) { c.DrainGrace = -time.Second }},
		{"log.format", func(c *Config) { c.LogFormat = "xml" }},
		{"log.level", func(c *Config) { c.LogLevel = "trace" }},
	} {
		c := ok()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "config: "+tc.field+": ") {
			t.Errorf("%s: error %v, want one naming it", tc.field, err)
		}
	}
	c := ok()
	c.DataDir = "relative"
	c.RelayAddress = netip.MustParseAddr("::ffff:192.0.2.1")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.DataDir) || c.RelayAddress != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("derived values: data_dir %q relay_address %v", c.DataDir, c.RelayAddress)
	}
}

func TestApplyEnv(t *testing.T) {
	env := map[string]string{
		"CVLAN_RELAY_RELAY_ADDRESS": "192.0.2.7",
		"CVLAN_RELAY_XDP":           "off",
		"CVLAN_RELAY_INTERFACES":    "eth0,eth1",
		"CVLAN_RELAY_DRAIN_GRACE":   "2s",
		"CVLAN_RELAY_STUN_LISTEN":   ":3479",
	}
	c := DefaultConfig()
	if err := c.LoadYAML("relay.yaml", []byte(fullYAML)); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.RelayAddress != netip.MustParseAddr("192.0.2.7") || c.XDP != xdprelay.ModeOff ||
		!reflect.DeepEqual(c.Interfaces, []string{"eth0", "eth1"}) || c.DrainGrace != 2*time.Second ||
		c.STUNListen != ":3479" || c.LogFormat != "json" {
		t.Fatalf("after env: %+v", c)
	}
	env["CVLAN_RELAY_IDLE_TIMEOUT"] = "soon"
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err == nil ||
		!strings.Contains(err.Error(), "CVLAN_RELAY_IDLE_TIMEOUT") {
		t.Fatalf("bad env: %v", err)
	}
}

// TestSettingsRoundTrip checks that every setting prints what it parses, which
// cmd/cvlan-relay relies on for flag defaults.
func TestSettingsRoundTrip(t *testing.T) {
	c := DefaultConfig()
	if err := c.LoadYAML("relay.yaml", []byte(fullYAML)); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	ds := d.Settings()
	seen := map[string]bool{}
	for i, s := range c.Settings() {
		if seen[s.Env] || seen[s.Flag] || !strings.HasPrefix(s.Env, "CVLAN_RELAY_") {
			t.Errorf("%s: env %s flag %s duplicated or misnamed", s.Name, s.Env, s.Flag)
		}
		seen[s.Env], seen[s.Flag] = true, true
		if err := ds[i].Set(s.Get()); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
	}
	if !reflect.DeepEqual(c, d) {
		t.Fatalf("round trip:\n%+v\n%+v", c, d)
	}
}

// FuzzLoadConfig checks that the YAML loader never panics, and that what it
// accepts and Validate passes is a usable Config.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(fullYAML))
	f.Add([]byte("relay_address: 192.0.2.1\nudp: {xdp: off}\n"))
	f.Add([]byte("a: &x [1, *x]\n"))
	f.Add([]byte("udp:\n  interfaces: [a, b]\n"))
	f.Add([]byte("---\n...\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := DefaultConfig()
		if err := c.LoadYAML("fuzz.yaml", data); err != nil {
			if !strings.HasPrefix(err.Error(), "config fuzz.yaml") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if c.Validate() == nil && (!c.RelayAddress.Is4() || c.IdleTimeout <= 0 || c.DataDir == "") {
			t.Fatalf("Validate passed an unusable config: %+v", c)
		}
	})
}
