package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/relay"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// Defaults of Config.
const (
	DefaultDataDir       = "/var/lib/cvlan-relay"
	DefaultFramedListen  = ":443"
	DefaultSTUNListen    = ":3478"
	DefaultMetricsListen = "127.0.0.1:9102"
	DefaultDrainGrace    = 5 * time.Second
)

// Config is the relay daemon's whole configuration, parsed once at the edge
// (cmd/cvlan-relay): defaults, then a YAML file, then CVLAN_RELAY_* variables, then
// flags. Validate checks it; Run takes only a validated Config.
type Config struct {
	// DataDir keeps relay.key and the self-signed TLS certificate.
	DataDir string
	// RelayAddress is the IPv4 address the relay relays UDP from: session ports
	// are bound to it and agents send to it. It must be an address of this host.
	RelayAddress netip.Addr
	// XDP is the UDP fast path's mode (datapath/relay/xdprelay.Mode).
	XDP xdprelay.Mode
	// Interfaces are where the XDP program attaches: every interface peers'
	// UDP traffic may arrive on.
	Interfaces []string
	// IdleTimeout unbinds UDP sessions without traffic for this long.
	IdleTimeout time.Duration
	// FramedListen is the HTTPS address of the framed relay (TCP framing and
	// WebSocket on one port).
	FramedListen string
	// TLSCert and TLSKey are the framed listener's certificate; both empty means a
	// self-signed certificate in DataDir. TLSNames are extra names and addresses
	// for that self-signed certificate.
	TLSCert, TLSKey string
	TLSNames        []string
	// DrainGrace is how long existing framed connections stay up after SIGTERM.
	DrainGrace time.Duration
	// STUNListen is the UDP address of the STUN server.
	STUNListen string
	// MetricsListen is the plain-HTTP address of /metrics and /healthz.
	MetricsListen string
	// ControllerURL is the controller's https:// URL and ControllerKey its Noise
	// key (mkey:…, from cvlanctl or the controller's /api/v1/info); the relay gets
	// its sessions and clients from it. Both or neither.
	ControllerURL string
	ControllerKey key.MachinePublic
	// LogFormat is text or json; LogLevel is debug, info, warn or error.
	LogFormat, LogLevel string
}

// DefaultConfig is the configuration before file, environment and flags.
func DefaultConfig() Config {
	return Config{
		DataDir:       DefaultDataDir,
		XDP:           xdprelay.ModeAuto,
		IdleTimeout:   relay.DefaultIdleTimeout,
		FramedListen:  DefaultFramedListen,
		DrainGrace:    DefaultDrainGrace,
		STUNListen:    DefaultSTUNListen,
		MetricsListen: DefaultMetricsListen,
		LogFormat:     "text",
		LogLevel:      "info",
	}
}

// Setting is one setting of a Config, reachable from the YAML file (Name), the
// environment (Env) and a flag (Flag). Set parses a value into the Config; Get
// prints the current one. Lists take comma-separated values.
type Setting struct {
	Name  string // YAML path, used in errors: "framed.listen"
	Env   string // CVLAN_RELAY_...
	Flag  string // flag name without dashes
	Usage string
	List  bool // a YAML sequence (or a comma-separated string)
	Set   func(string) error
	Get   func() string
}

// Settings lists the settings of c, in the order of the YAML file.
func (c *Config) Settings() []Setting {
	s := []Setting{
		str("data_dir", "data-dir", "directory for relay.key and the self-signed TLS certificate", &c.DataDir),
		str("controller.url", "controller", "https:// URL of the controller the relay takes its sessions and clients from", &c.ControllerURL),
		{Name: "controller.key", Flag: "controller-key", Usage: "the controller's Noise key (mkey:…, as cvlanctl key create prints it)",
			Set: func(v string) error {
				if v == "" {
					c.ControllerKey = key.MachinePublic{}
					return nil
				}
				k, err := key.ParseMachinePublic(v)
				if err != nil {
					return fmt.Errorf("%q is not a controller key (mkey:…)", v)
				}
				c.ControllerKey = k
				return nil
			},
			Get: func() string {
				if c.ControllerKey.IsZero() {
					return ""
				}
				return c.ControllerKey.String()
			}},
		{Name: "relay_address", Flag: "relay-address", Usage: "public IPv4 address of this host the relay relays UDP from (required)",
			Set: func(v string) error {
				a, err := netip.ParseAddr(v)
				if err != nil {
					return fmt.Errorf("%q is not an IP address", v)
				}
				c.RelayAddress = a
				return nil
			},
			Get: func() string {
				if !c.RelayAddress.IsValid() {
					return ""
				}
				return c.RelayAddress.String()
			}},
		{Name: "udp.xdp", Flag: "xdp", Usage: "UDP fast path: auto, native, generic or off", Set: c.XDP.Set, Get: c.XDP.String},
		list("udp.interfaces", "interfaces", "interfaces the XDP program attaches to", &c.Interfaces),
		dur("udp.idle_timeout", "idle-timeout", "unbind UDP sessions idle for this long", &c.IdleTimeout),
		str("framed.listen", "framed-listen", "HTTPS address of the framed relay (TCP and WebSocket)", &c.FramedListen),
		str("framed.tls_cert", "tls-cert", "TLS certificate file (default: self-signed, generated in data_dir)", &c.TLSCert),
		str("framed.tls_key", "tls-key", "TLS private key file", &c.TLSKey),
		list("framed.tls_names", "tls-names", "extra names and addresses for the self-signed certificate", &c.TLSNames),
		dur("framed.drain_grace", "drain-grace", "how long framed connections stay up after SIGTERM", &c.DrainGrace),
		str("stun.listen", "stun-listen", "UDP address of the STUN server", &c.STUNListen),
		str("metrics.listen", "metrics-listen", "plain-HTTP address of /metrics and /healthz", &c.MetricsListen),
		str("log.format", "log-format", "text or json", &c.LogFormat),
		str("log.level", "log-level", "debug, info, warn or error", &c.LogLevel),
	}
	for i := range s {
		s[i].Env = envOf(s[i].Flag)
	}
	return s
}

func str(name, flag, usage string, p *string) Setting {
	return Setting{Name: name, Flag: flag, Usage: usage,
		Set: func(v string) error { *p = v; return nil },
		Get: func() string { return *p }}
}

func dur(name, flag, usage string, p *time.Duration) Setting {
	return Setting{Name: name, Flag: flag, Usage: usage,
		Set: func(v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration (for example 5s or 3m)", v)
			}
			*p = d
			return nil
		},
		Get: func() string { return p.String() }}
}

func list(name, flag, usage string, p *[]string) Setting {
	return Setting{Name: name, Flag: flag, Usage: usage, List: true,
		Set: func(v string) error {
			*p = nil
			if v != "" {
				*p = strings.Split(v, ",")
			}
			return nil
		},
		Get: func() string { return strings.Join(*p, ",") }}
}

// envOf is the environment variable of a setting: CVLAN_RELAY_ and the flag name.
func envOf(flag string) string {
	return "CVLAN_RELAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// LoadFile merges a YAML file into c. Unknown keys, and values that do not parse,
// are errors naming the key and its line.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return c.LoadYAML(path, data)
}

// LoadYAML merges YAML data into c; name is the file name used in errors.
func (c *Config) LoadYAML(name string, data []byte) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file
		}
		return fmt.Errorf("config %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: one YAML document expected", name)
	}
	byName := map[string]Setting{}
	for _, s := range c.Settings() {
		byName[s.Name] = s
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if err := load(byName, "", root); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	return nil
}

// load walks a mapping node, setting the leaves under prefix.
func load(byName map[string]Setting, prefix string, n *yaml.Node) error {
	where := prefix
	if where == "" {
		where = "the top level"
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s must be a mapping of keys to values", n.Line, where)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: keys under %s must be plain names", k.Line, where)
		}
		name := k.Value
		if prefix != "" {
			name = prefix + "." + k.Value
		}
		if seen[name] {
			return fmt.Errorf("line %d: %s: set twice", k.Line, name)
		}
		seen[name] = true
		if v.Kind == yaml.AliasNode {
			return fmt.Errorf("line %d: %s: YAML aliases are not supported", v.Line, name)
		}
		s, leaf := byName[name]
		if !leaf {
			if !isSection(byName, name) {
				return fmt.Errorf("line %d: unknown key %s", k.Line, name)
			}
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				continue
			}
			if err := load(byName, name, v); err != nil {
				return err
			}
			continue
		}
		if err := setNode(s, v); err != nil {
			return fmt.Errorf("line %d: %s: %w", v.Line, name, err)
		}
	}
	return nil
}

// isSection reports whether name is the parent of some setting.
func isSection(byName map[string]Setting, name string) bool {
	for n := range byName {
		if strings.HasPrefix(n, name+".") {
			return true
		}
	}
	return false
}

// setNode sets s from a YAML value: a scalar, or for lists a sequence of scalars.
func setNode(s Setting, v *yaml.Node) error {
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		return nil // key: (no value) keeps the default
	case v.Kind == yaml.ScalarNode:
		return s.Set(v.Value)
	case v.Kind == yaml.SequenceNode && s.List:
		items := make([]string, 0, len(v.Content))
		for _, it := range v.Content {
			if it.Kind != yaml.ScalarNode || it.Value == "" || strings.Contains(it.Value, ",") {
				return fmt.Errorf("list items must be non-empty plain values without commas")
			}
			items = append(items, it.Value)
		}
		return s.Set(strings.Join(items, ","))
	case s.List:
		return errors.New("must be a list")
	}
	return errors.New("must be a single value")
}

// ApplyEnv merges CVLAN_RELAY_* variables into c; errors name the variable.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	for _, s := range c.Settings() {
		if v := getenv(s.Env); v != "" {
			if err := s.Set(v); err != nil {
				return fmt.Errorf("config: %s: %w", s.Env, err)
			}
		}
	}
	return nil
}

// Validate checks c and fills derived values; errors name the setting by its YAML
// path.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if c.DataDir == "" {
		return bad("data_dir", "must not be empty")
	}
	if !filepath.IsAbs(c.DataDir) {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return bad("data_dir", "%v", err)
		}
		c.DataDir = abs
	}
	switch a := c.RelayAddress; {
	case !a.IsValid():
		return bad("relay_address", "required: the public IPv4 address of this host the relay relays UDP from")
	case !a.Unmap().Is4():
		return bad("relay_address", "%s is not an IPv4 address (the UDP relay is IPv4 only)", a)
	case a.Unmap().IsUnspecified() || a.Unmap().IsMulticast():
		return bad("relay_address", "%s is not a unicast address", a)
	}
	c.RelayAddress = c.RelayAddress.Unmap()
	if _, err := xdprelay.ParseMode(string(c.XDP)); err != nil {
		return bad("udp.xdp", "%v", err)
	}
	for i, ifc := range c.Interfaces {
		if ifc == "" || len(ifc) > 15 || strings.ContainsAny(ifc, "/ \t") {
			return bad(fmt.Sprintf("udp.interfaces[%d]", i), "%q is not an interface name", ifc)
		}
	}
	if (c.XDP == xdprelay.ModeNative || c.XDP == xdprelay.ModeGeneric) && len(c.Interfaces) == 0 {
		return bad("udp.interfaces", "XDP mode %s needs at least one interface", c.XDP)
	}
	switch {
	case c.ControllerURL == "" && !c.ControllerKey.IsZero():
		return bad("controller.url", "required with controller.key")
	case c.ControllerURL != "" && c.ControllerKey.IsZero():
		return bad("controller.key", "required with controller.url: the controller's Noise key pins it")
	case c.ControllerURL != "":
		if u, err := url.Parse(c.ControllerURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return bad("controller.url", "%q is not an https:// URL", c.ControllerURL)
		}
	}
	if c.IdleTimeout <= 0 {
		return bad("udp.idle_timeout", "must be positive")
	}
	for _, l := range []struct{ name, addr string }{
		{"framed.listen", c.FramedListen}, {"stun.listen", c.STUNListen}, {"metrics.listen", c.MetricsListen},
	} {
		if _, port, err := net.SplitHostPort(l.addr); err != nil || port == "" {
			return bad(l.name, "%q is not host:port (for example :3478 or 127.0.0.1:9102)", l.addr)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("framed.tls_key", "tls_cert and tls_key go together; set both or neither")
	}
	for i, n := range c.TLSNames {
		if n == "" {
			return bad(fmt.Sprintf("framed.tls_names[%d]", i), "must not be empty")
		}
	}
	if c.DrainGrace < 0 {
		return bad("framed.drain_grace", "must not be negative")
	}
	if !slices.Contains([]string{"text", "json"}, c.LogFormat) {
		return bad("log.format", "%q is not text or json", c.LogFormat)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return bad("log.level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	return nil
}
