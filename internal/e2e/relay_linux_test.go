package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/internal/e2e/harness"
)

// relayWithin bounds how long two agents whose direct UDP is blocked take to
// ping through a relay: each failed path costs the agents' --path-timeout (6 s
// here) plus up to one WireGuard handshake retry (5 s).
const relayWithin = 90 * time.Second

// relayLab is two agents on LANs of their own whose direct UDP a router drops,
// and a controller and a relay on a third LAN behind the same router:
//
//	a 10.78.1.2 ─ lanA ─┐                ┌─ lanC ─ controller 10.78.3.2
//	                    router (nftables)          relay 10.78.3.3
//	b 10.78.2.2 ─ lanB ─┘
type relayLab struct {
	*lab
	router, relayNS *harness.NS
	relay           *harness.Proc
}

// newRelayLab builds the topology and starts the relay with the given XDP mode,
// registered with the given framed URLs; blockRelayUDP also drops UDP to the
// relay's session ports, so only the framed relay gets through.
func newRelayLab(t *testing.T, xdp string, tlsURL, wsURL bool, blockRelayUDP bool) *relayLab {
	h := harness.New(t)
	lanA, lanB, lanC := h.LAN("10.78.1.0/24"), h.LAN("10.78.2.0/24"), h.LAN("10.78.3.0/24")
	router := h.Netns("rtr")
	h.Attach(router, lanA, "10.78.1.1")
	h.Attach(router, lanB, "10.78.2.1")
	h.Attach(router, lanC, "10.78.3.1")
	mustRun(t, h, router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	rules := `table inet cvlan_e2e {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ip saddr 10.78.1.0/24 ip daddr 10.78.2.0/24 meta l4proto udp counter drop comment "direct a->b"
		ip saddr 10.78.2.0/24 ip daddr 10.78.1.0/24 meta l4proto udp counter drop comment "direct b->a"
`
	if blockRelayUDP {
		rules += `		ip daddr 10.78.3.3 udp dport 40000-40999 counter drop comment "relay sessions"
`
	}
	rules += "\t}\n}\n"
	mustRun(t, h, router, "nft", "-f", writeTemp(t, h, "rules.nft", rules))

	l := newLabOn(t, h, lanC, "10.78.3.2")
	mustRun(t, h, l.ctlNS, "ip", "route", "add", "default", "via", "10.78.3.1")
	rl := &relayLab{lab: l, router: router}

	// The relay: its key, registered by the operator, then the daemon.
	rl.relayNS = h.Netns("relay")
	ifc := h.Attach(rl.relayNS, lanC, "10.78.3.3")
	mustRun(t, h, rl.relayNS, "ip", "route", "add", "default", "via", "10.78.3.1")
	data := filepath.Join(h.TempDir(), "relay")
	out := mustRun(t, h, rl.relayNS, l.bins.Relay, "key", "--data-dir", data)
	relayKey := regexp.MustCompile(`relaykey:[0-9a-f]{64}`).FindString(out)
	if relayKey == "" {
		t.Fatalf("cvlan-relay key printed no relay key:\n%s", out)
	}
	args := []string{"relay", "create", "r1", "--region", "lab", "--public-addr", "10.78.3.3",
		"--udp-port-min", "40000", "--udp-port-max", "40999", "--stun-port", "3478", "--relay-key", relayKey}
	if tlsURL {
		args = append(args, "--tls-url", "https://10.78.3.3:8444")
	}
	if wsURL {
		args = append(args, "--ws-url", "wss://10.78.3.3:8444")
	}
	l.must(args...)
	rl.relay = h.Start(rl.relayNS, "relay", l.bins.Relay, "serve", "--data-dir", data,
		"--relay-address", "10.78.3.3", "--xdp", xdp, "--interfaces", ifc,
		"--framed-listen", "10.78.3.3:8444", "--stun-listen", "10.78.3.3:3478", "--metrics-listen", "127.0.0.1:9102",
		"--controller", l.url, "--controller-key", l.key)

	for _, x := range []struct {
		name string
		lan  *harness.LAN
		net  string
	}{{"a", lanA, "10.78.1"}, {"b", lanB, "10.78.2"}} {
		ns := h.Netns(x.name)
		h.Attach(ns, x.lan, x.net+".2")
		mustRun(t, h, ns, "ip", "route", "add", "default", "via", x.net+".1")
		l.startAgent(x.name, ns, l.secret, "--path-timeout", "6s")
	}
	return rl
}

func mustRun(t *testing.T, h *harness.H, ns *harness.NS, argv ...string) string {
	t.Helper()
	out, err := h.Run(ns, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

func writeTemp(t *testing.T, h *harness.H, name, text string) string {
	t.Helper()
	path := filepath.Join(h.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// relayMetrics fetches the relay's /metrics.
func (rl *relayLab) relayMetrics() string {
	out, err := rl.h.Run(rl.relayNS, "curl", "-fsS", "http://127.0.0.1:9102/metrics")
	if err != nil {
		return ""
	}
	return out
}

// metric is the value of the first sample of name whose labels contain all of
// labels ("" for none), or 0.
func metric(text, name, labels string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		lbl := ""
		if strings.HasPrefix(rest, "{") {
			end := strings.Index(rest, "}")
			lbl, rest = rest[:end+1], rest[end+1:]
		} else if !strings.HasPrefix(rest, " ") {
			continue
		}
		ok := true
		for _, want := range strings.Split(labels, ",") {
			if want != "" && !strings.Contains(lbl, want) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err == nil {
			return v
		}
	}
	return 0
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "([^"]+)"`)

// drops are the router's drop counters by rule comment.
func (rl *relayLab) drops() map[string]int {
	out, _ := rl.h.Run(rl.router, "nft", "list", "table", "inet", "cvlan_e2e")
	m := map[string]int{}
	for _, x := range nftCounter.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(x[1])
		m[x[2]] = n
	}
	return m
}

// TestRelay blocks direct UDP between two agents and checks that they ping each
// other through each of the relay's four paths, and that the relay's counters
// of that path, and only that path, carried the packets.
func TestRelay(t *testing.T) {
	for _, tc := range []struct {
		name           string
		xdp            string
		tls, ws, block bool
		// check says whether the relay's metrics show the path carried the pings.
		check func(m string) error
	}{
		{"xdp", "generic", true, true, false, func(m string) error {
			if x, g := metric(m, "cvlan_relay_packets_total", `path="xdp"`), metric(m, "cvlan_relay_packets_total", `path="go"`); x < 4 || g > 2 {
				return fmt.Errorf("relay packets: xdp %v, go %v; want the pings on xdp", x, g)
			}
			return nil
		}},
		{"go", "off", true, true, false, func(m string) error {
			if x, g := metric(m, "cvlan_relay_packets_total", `path="xdp"`), metric(m, "cvlan_relay_packets_total", `path="go"`); x > 0 || g < 4 {
				return fmt.Errorf("relay packets: xdp %v, go %v; want the pings on go", x, g)
			}
			return nil
		}},
		{"tcp", "off", true, false, true, framedOn("tcp", "ws")},
		{"ws", "off", false, true, true, framedOn("ws", "tcp")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rl := newRelayLab(t, tc.xdp, tc.tls, tc.ws, tc.block)
			nodes := rl.waitNodes("a", "b")
			start := time.Now()
			rl.allPing(relayWithin, nodes, "a", "b")
			t.Logf("a and b ping through the relay (%s) after %s", tc.name, time.Since(start).Round(100*time.Millisecond))
			rl.checkWireGuard(rl.agents["a"]) // kernel WireGuard in the kernel matrix's VMs
			d := rl.drops()
			if d["direct a->b"]+d["direct b->a"] == 0 {
				t.Fatalf("the router dropped no direct UDP (%v): the agents never tried direct", d)
			}
			if tc.block && d["relay sessions"] == 0 {
				t.Fatalf("the router dropped no UDP to the relay's sessions (%v): the agents never tried them", d)
			}
			// Ping again, then read the counters: the path must have carried them.
			before := rl.relayMetrics()
			for i := 0; i < 3; i++ {
				if err := rl.h.Ping(rl.agents["a"].ns, nodes["b"].IPv4); err != nil {
					t.Fatal(err)
				}
			}
			harness.Eventually(t, 10*time.Second, poll, func() error {
				return tc.check(diffMetrics(before, rl.relayMetrics()))
			})
			am := rl.metrics(rl.agents["a"])
			want := map[string]string{"xdp": "udp", "go": "udp", "tcp": "tcp", "ws": "ws"}[tc.name]
			if v := metric(am, "cvlan_agent_relay_packets_total", `path="`+want+`",direction="out"`); v < 3 {
				t.Fatalf("agent a's relay proxy sent %v packets on path %s:\n%s", v, want, grepLines(am, "cvlan_agent_relay"))
			}
		})
	}
}

// framedOn checks that the framed relay carried the pings over transport on and
// none over off, and the UDP relay none.
func framedOn(on, off string) func(string) error {
	return func(m string) error {
		in := metric(m, "cvlan_relay_framed_frames_total", `transport="`+on+`",direction="in"`)
		other := metric(m, "cvlan_relay_framed_frames_total", `transport="`+off+`",direction="in"`)
		relayed := metric(m, "cvlan_relay_framed_packets_relayed_total", "")
		udp := metric(m, "cvlan_relay_packets_total", `path="go"`) + metric(m, "cvlan_relay_packets_total", `path="xdp"`)
		if in < 6 || relayed < 6 || other > 0 || udp > 0 {
			return fmt.Errorf("framed frames in: %s %v, %s %v; relayed %v; UDP relay %v", on, in, off, other, relayed, udp)
		}
		return nil
	}
}

// diffMetrics returns after with every sample's value minus its value in before,
// so that checks see only what happened in between.
func diffMetrics(before, after string) string {
	var b strings.Builder
	for _, line := range strings.Split(after, "\n") {
		i := strings.LastIndex(line, " ")
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		key := line[:i]
		for _, bl := range strings.Split(before, "\n") {
			if strings.HasPrefix(bl, key+" ") {
				if bv, err := strconv.ParseFloat(bl[len(key)+1:], 64); err == nil {
					v -= bv
				}
				break
			}
		}
		fmt.Fprintf(&b, "%s %g\n", key, v)
	}
	return b.String()
}
