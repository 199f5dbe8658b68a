package agent

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Config is the agent's whole configuration, parsed once at the edge (cmd/cvlan-agent).
type Config struct {
	// Controller is the controller's https URL.
	Controller string
	// ControllerKey is the controller's Noise public key, pinned.
	ControllerKey key.MachinePublic
	// EnrollKey is the enrollment key secret; needed only until the agent is enrolled.
	EnrollKey string
	// Name is the wanted node name (the host name when empty).
	Name string
	// StateDir keeps the keys, the node's identity and the last network map.
	StateDir string
	// Interface is the WireGuard interface name; unique per host.
	Interface string
	// ListenPort is WireGuard's UDP port.
	ListenPort int
	// WireGuard is "auto" (kernel, else userspace), "kernel" or "userspace".
	WireGuard string
	// Policy is "ebpf" (enforce the compiled policy in TC programs) or "off" (no
	// enforcement: only for kernels without the eBPF features, and for tests of
	// other parts on slow emulated kernels).
	Policy string
	// MetricsListen is where /metrics and /healthz are served ("" turns them off).
	MetricsListen string
	// KeepAlive is the control channel's keep-alive interval (30 s when zero).
	KeepAlive time.Duration
	// MaxBackoff caps the wait between reconnection attempts (30 s when zero).
	MaxBackoff time.Duration
	// PathTimeout is how long WireGuard may try a peer over one path with no
	// handshake before the agent asks the controller for the next path (direct,
	// UDP relay session, framed relay).
	PathTimeout time.Duration
	Log         *slog.Logger
}

// DefaultConfig is the configuration before flags and environment.
func DefaultConfig() Config {
	return Config{
		StateDir:      "/var/lib/cvlan-agent",
		Interface:     "cvlan0",
		ListenPort:    51820,
		WireGuard:     "auto",
		Policy:        "ebpf",
		MetricsListen: "127.0.0.1:9101",
		PathTimeout:   DefaultPathTimeout,
	}
}

// Validate checks c and names the first wrong setting.
func (c *Config) Validate() error {
	u, err := url.Parse(c.Controller)
	switch {
	case c.Controller == "":
		return fmt.Errorf("controller: required (the controller's https:// URL)")
	case err != nil || u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("controller: %q is not an https:// URL", c.Controller)
	case c.ControllerKey.IsZero():
		return fmt.Errorf("controller-key: required (the controller's %s... Noise key, printed by cvlan-controller init and cvlanctl key create)", key.MachinePrefix)
	case c.StateDir == "":
		return fmt.Errorf("state-dir: required")
	case !validIfName(c.Interface):
		return fmt.Errorf("interface: %q is not an interface name (1 to 15 characters, no '/', ':' or spaces)", c.Interface)
	case c.ListenPort < 1 || c.ListenPort > 65535:
		return fmt.Errorf("listen-port: %d is outside 1..65535", c.ListenPort)
	case c.WireGuard != "auto" && c.WireGuard != "kernel" && c.WireGuard != "userspace":
		return fmt.Errorf("wireguard: %q is not auto, kernel or userspace", c.WireGuard)
	case c.Policy != "ebpf" && c.Policy != "off":
		return fmt.Errorf("policy: %q is not ebpf or off", c.Policy)
	case c.MaxBackoff < 0 || c.MaxBackoff > time.Hour:
		return fmt.Errorf("max-backoff: %s is outside 0..1h", c.MaxBackoff)
	case c.PathTimeout < 6*time.Second || c.PathTimeout > 10*time.Minute:
		return fmt.Errorf("path-timeout: %s is outside 6s..10m (WireGuard retries a handshake every 5 s)", c.PathTimeout)
	case strings.ContainsAny(c.EnrollKey, " \t\r\n"):
		return fmt.Errorf("enroll-key: contains white space")
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("metrics-listen: %q is not host:port", c.MetricsListen)
		}
	}
	return nil
}

func validIfName(s string) bool {
	return s != "" && len(s) <= 15 && s != "." && s != ".." && !strings.ContainsAny(s, "/: \t\n")
}
