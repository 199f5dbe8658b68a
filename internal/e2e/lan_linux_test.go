package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/internal/e2e/harness"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(probeEnv); role != "" {
		os.Exit(probe(strings.Fields(role)))
	}
	harness.Main(m)
}

// Timeouts for convergence. A first enrollment includes building the device; later
// changes must reach every agent within deltaWithin (the 5 s).
const (
	firstContact = 30 * time.Second
	deltaWithin  = 5 * time.Second
	poll         = 100 * time.Millisecond
)

// lab is a controller and agents on one LAN, each in its own namespace.
type lab struct {
	t      *testing.T
	h      *harness.H
	bins   harness.Bins
	lan    *harness.LAN
	ctlNS  *harness.NS
	ctl    *harness.Proc
	url    string
	key    string // controller's Noise key
	cfg    string // cvlanctl config file
	secret string // a reusable enrollment key for network prod
	agents map[string]*agent
}

type agent struct {
	name, iface, stateDir string
	ns                    *harness.NS
	proc                  *harness.Proc
}

func newLab(t *testing.T) *lab {
	h := harness.New(t)
	return newLabOn(t, h, h.LAN("10.77.0.0/24"), "10.77.0.1")
}

// newLabOn starts the controller on lan at address ctlAddr.
func newLabOn(t *testing.T, h *harness.H, lan *harness.LAN, ctlAddr string) *lab {
	bins := harness.Binaries(t)
	l := &lab{t: t, h: h, bins: bins, lan: lan, agents: map[string]*agent{}}
	l.ctlNS = h.Netns("ctl")
	h.Attach(l.ctlNS, l.lan, ctlAddr)
	data := filepath.Join(h.TempDir(), "controller")
	listen := ctlAddr + ":8443"
	out, err := h.Run(l.ctlNS, bins.Controller, "init", "--data-dir", data, "--listen", listen)
	if err != nil {
		t.Fatalf("controller init: %v\n%s", err, out)
	}
	field := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `: (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("controller init printed no %s:\n%s", name, out)
		}
		return m[1]
	}
	l.key, l.url = field("noise-public-key"), "https://"+listen
	l.ctl = h.Start(l.ctlNS, "controller", bins.Controller, "serve", "--data-dir", data, "--listen", listen)
	l.cfg = filepath.Join(h.TempDir(), "cvlanctl.yaml")
	harness.Eventually(t, firstContact, poll, func() error {
		_, err := l.cvlanctl("login", "--server", l.url, "--token", field("operator-token"), "--fingerprint", field("tls-fingerprint"))
		return err
	})
	l.must("tenant", "create", "acme")
	l.must("network", "create", "prod", "--tenant", "acme", "--ipv4", "100.64.0.0/24", "--ipv6", "fd00:64::/64")
	var k struct{ Secret string }
	l.mustJSON(&k, "key", "create", "--tenant", "acme", "--network", "prod", "--reusable", "--expiry", "1h")
	l.secret = k.Secret
	return l
}

// cvlanctl runs cvlanctl in the controller's namespace.
func (l *lab) cvlanctl(args ...string) (string, error) {
	return l.h.Run(l.ctlNS, append([]string{"env", "CVLAN_CONFIG=" + l.cfg, l.bins.Ctl}, args...)...)
}

func (l *lab) must(args ...string) string {
	l.t.Helper()
	out, err := l.cvlanctl(args...)
	if err != nil {
		l.t.Fatalf("cvlanctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (l *lab) mustJSON(v any, args ...string) {
	l.t.Helper()
	out := l.must(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		l.t.Fatalf("cvlanctl %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addAgent starts an agent in a new namespace at underlay address .n.
func (l *lab) addAgent(name string, n int, secret string) *agent {
	ns := l.h.Netns(name)
	l.h.Attach(ns, l.lan, fmt.Sprintf("10.77.0.%d/24", n))
	return l.startAgent(name, ns, secret)
}

// startAgent starts an agent in ns, which must reach the controller.
func (l *lab) startAgent(name string, ns *harness.NS, secret string, extra ...string) *agent {
	a := &agent{name: name, ns: ns, iface: l.h.Interface(name), stateDir: filepath.Join(l.h.TempDir(), name)}
	a.proc = l.h.Start(a.ns, "agent-"+name, append([]string{l.bins.Agent, "up",
		"--controller", l.url, "--controller-key", l.key, "--enroll-key", secret, "--name", name,
		"--state-dir", a.stateDir, "--interface", a.iface, "--metrics-listen", "127.0.0.1:9101", "--max-backoff", "1s",
		"--policy", agentPolicy()}, extra...)...)
	l.agents[name] = a
	return a
}

// node is what cvlanctl says of a node.
type node struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	IPv4    string `json:"ipv4"`
	IPv6    string `json:"ipv6"`
	NodeKey string `json:"node_key"`
}

func (l *lab) nodes() map[string]node {
	var list []node
	l.mustJSON(&list, "node", "list", "--tenant", "acme")
	out := map[string]node{}
	for _, n := range list {
		out[n.Name] = n
	}
	return out
}

// waitNodes waits until every named agent is enrolled and returns the nodes.
func (l *lab) waitNodes(names ...string) map[string]node {
	var nodes map[string]node
	harness.Eventually(l.t, firstContact, poll, func() error {
		nodes = l.nodes()
		for _, n := range names {
			if _, ok := nodes[n]; !ok {
				return fmt.Errorf("node %s not enrolled yet (have %d nodes)", n, len(nodes))
			}
		}
		return nil
	})
	return nodes
}

// matrix pings every ordered pair over the overlay, IPv4 and IPv6, and returns the
// pairs that failed.
func (l *lab) matrix(nodes map[string]node, names ...string) []string {
	var failed []string
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			for _, addr := range []string{nodes[to].IPv4, nodes[to].IPv6} {
				if err := l.h.Ping(l.agents[from].ns, addr); err != nil {
					failed = append(failed, from+"->"+to+" ("+addr+")")
				}
			}
		}
	}
	return failed
}

func (l *lab) allPing(within time.Duration, nodes map[string]node, names ...string) {
	l.t.Helper()
	harness.Eventually(l.t, within, poll, func() error {
		if f := l.matrix(nodes, names...); len(f) > 0 {
			return fmt.Errorf("no overlay ping: %s", strings.Join(f, ", "))
		}
		return nil
	})
}

// metrics fetches an agent's /metrics from inside its namespace.
func (l *lab) metrics(a *agent) string {
	out, err := l.h.Run(a.ns, "curl", "-fsS", "http://127.0.0.1:9101/metrics")
	if err != nil {
		return ""
	}
	return out
}

// expectWireGuardEnv, when set, names the WireGuard implementation ("kernel" or
// "userspace") every agent must report. The kernel matrix (scripts/kernel-matrix.sh)
// sets it, so that a kernel that should have WireGuard cannot pass on the fallback.
const expectWireGuardEnv = "CVLAN_EXPECT_WIREGUARD"

var infoWireGuard = regexp.MustCompile(`(?m)^cvlan_agent_info\{[^}]*\bwireguard="([^"]*)"`)

// checkWireGuard fails the test if expectWireGuardEnv is set and agent a's
// cvlan_agent_info metric reports another implementation.
func (l *lab) checkWireGuard(a *agent) {
	l.t.Helper()
	want := os.Getenv(expectWireGuardEnv)
	if want == "" {
		return
	}
	if want != "kernel" && want != "userspace" {
		l.t.Fatalf("%s=%q: want \"kernel\" or \"userspace\"", expectWireGuardEnv, want)
	}
	m := l.metrics(a)
	got := infoWireGuard.FindStringSubmatch(m)
	if got == nil {
		l.t.Fatalf("agent %s's metrics have no cvlan_agent_info with a wireguard label:\n%s", a.name, m)
	}
	if got[1] != want {
		l.t.Fatalf("agent %s runs %s WireGuard, but %s=%s", a.name, got[1], expectWireGuardEnv, want)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// agentPolicy is the agents' --policy: "ebpf", or what CVLAN_E2E_AGENT_POLICY says.
// The kernel matrix turns enforcement off for the e2e suite on emulated kernels,
// where verifying the policy programs takes longer than the tests' deadlines; its
// bpfpolicy suite tests them on those kernels instead.
func agentPolicy() string {
	if p := os.Getenv("CVLAN_E2E_AGENT_POLICY"); p != "" {
		return p
	}
	return "ebpf"
}
