package wg

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/datapath/route"
	"github.com/cvlan/cvlan/internal/privileged"
)

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates network namespace name, with loopback up, for the test.
func newNetns(t *testing.T, name string) {
	t.Helper()
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	ip(t, "-n", name, "link", "set", "lo", "up")
}

// cleanSocket removes name's UAPI socket when the test ends, should a helper have left
// it behind (the tests check that Close removes it). Register it before the helpers:
// cleanups run last-registered first.
func cleanSocket(t *testing.T, name string) {
	t.Cleanup(func() { os.Remove(socketPath(SocketDir, name)) })
}

// kernelHasWireGuard probes ns with iproute2, independently of the code under test. A
// failure that does not say "no such link type" fails the test, so a broken probe
// cannot turn into a wrong expectation.
func kernelHasWireGuard(t *testing.T, ns string) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "link", "add", "cvwgprobe", "type", "wireguard").CombinedOutput()
	if err == nil {
		ip(t, "-n", ns, "link", "del", "cvwgprobe")
		return true
	}
	if s := string(out); strings.Contains(s, "Unknown device type") || strings.Contains(s, "not supported") {
		return false
	}
	t.Fatalf("probing for kernel WireGuard: %v\n%s", err, out)
	return false
}

// expectEnv, when set, names the implementation ("kernel" or "userspace") that a
// device opened in ModeAuto must pick. The kernel matrix (scripts/kernel-matrix.sh)
// sets it, so that a kernel that should have WireGuard cannot pass on the fallback.
const expectEnv = "CVLAN_EXPECT_WIREGUARD"

// checkExpected fails t if expectEnv is set and impl is not the implementation it
// names.
func checkExpected(t *testing.T, impl string) {
	t.Helper()
	switch want := os.Getenv(expectEnv); want {
	case "":
	case ImplKernel, ImplUserspace:
		if impl != want {
			t.Fatalf("ModeAuto picked %s WireGuard, but %s=%s", impl, expectEnv, want)
		}
	default:
		t.Fatalf("%s=%q: want %q or %q", expectEnv, want, ImplKernel, ImplUserspace)
	}
}

func linkExists(t *testing.T, ns, name string) bool {
	t.Helper()
	return exec.Command("ip", "-n", ns, "link", "show", "dev", name).Run() == nil
}

func socketExists(name string) bool {
	_, err := os.Lstat(socketPath(SocketDir, name))
	return err == nil
}

// ping sends one echo request from ns and waits a second for the reply.
func ping(ns, addr string) error {
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c1", "-W1", addr).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// pingUntil pings until a reply comes or the deadline passes.
func pingUntil(t *testing.T, ns, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := ping(ns, addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ping reply from %s in %s within %s: %v", addr, ns, within, err)
		}
	}
}

func pingFails(t *testing.T, ns, addr string) {
	t.Helper()
	if err := ping(ns, addr); err == nil {
		t.Fatalf("ping from %s to %s succeeded; want no reply", ns, addr)
	}
}

// TestModes opens devices in each mode in a namespace of its own: ModeAuto and
// ModeKernel must pick the kernel exactly when iproute2 can create a wireguard link
// there, ModeUserspace never, and Close must leave neither link nor socket.
func TestModes(t *testing.T) {
	privileged.Require(t)
	pid := os.Getpid()
	ns := fmt.Sprintf("cvlan-wgm-%d", pid)
	name := fmt.Sprintf("cvwm%d", pid)
	newNetns(t, ns)
	cleanSocket(t, name)
	kernel := kernelHasWireGuard(t, ns)
	t.Logf("kernel WireGuard: %v", kernel)
	h := startHelper(t, ns)

	closed := func(mode Mode) {
		t.Helper()
		h.must(helperRequest{Op: "close", Name: name})
		if linkExists(t, ns, name) {
			t.Errorf("%s: link %s still exists after Close", mode, name)
		}
		if socketExists(name) {
			t.Errorf("%s: UAPI socket of %s still exists after Close", mode, name)
		}
	}

	for _, tc := range []struct {
		mode Mode
		want string
	}{
		{ModeAuto, map[bool]string{true: ImplKernel, false: ImplUserspace}[kernel]},
		{"", map[bool]string{true: ImplKernel, false: ImplUserspace}[kernel]},
		{ModeUserspace, ImplUserspace},
		{ModeKernel, map[bool]string{true: ImplKernel, false: ""}[kernel]},
	} {
		r := h.call(helperRequest{Op: "open", Name: name, Mode: tc.mode})
		if tc.want == "" {
			if !r.KernelUnsupported || !strings.Contains(r.Err, "the kernel has no WireGuard") {
				t.Errorf("%q: Open = %+v, want ErrKernelUnsupported", tc.mode, r)
			}
			if linkExists(t, ns, name) || socketExists(name) {
				t.Errorf("%q: a failed Open left a link or socket behind", tc.mode)
			}
			continue
		}
		if r.Err != "" || r.Impl != tc.want {
			t.Fatalf("%q: Open = %+v, want implementation %s", tc.mode, r, tc.want)
		}
		if tc.mode == ModeAuto {
			checkExpected(t, r.Impl)
		}
		if !linkExists(t, ns, name) {
			t.Errorf("%q: no link %s after Open", tc.mode, name)
		}
		if got := socketExists(name); got != (r.Impl == ImplUserspace) {
			t.Errorf("%q: UAPI socket exists = %v with implementation %s", tc.mode, got, r.Impl)
		}
		closed(tc.mode)
	}

	// Release: wireguard-go goes with the process; a kernel link stays, with its
	// peers, and the next Open adopts it.
	r := h.call(helperRequest{Op: "open", Name: name, Mode: ModeAuto})
	if r.Err != "" {
		t.Fatalf("Open: %s", r.Err)
	}
	h.must(helperRequest{Op: "release", Name: name})
	if got := linkExists(t, ns, name); got != kernel {
		t.Errorf("after Release with implementation %s: link exists = %v, want %v", r.Impl, got, kernel)
	}
	if socketExists(name) {
		t.Errorf("after Release: the UAPI socket of %s still exists", name)
	}
	if kernel {
		if r := h.call(helperRequest{Op: "open", Name: name, Mode: ModeAuto}); r.Err != "" || r.Impl != ImplKernel {
			t.Fatalf("Open after Release = %+v, want the kernel link adopted", r)
		}
		closed(ModeAuto)
	}

	// A stale socket, as a crashed wireguard-go leaves behind, is removed by Open.
	l, err := net.Listen("unix", socketPath(SocketDir, name))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if r := h.call(helperRequest{Op: "open", Name: name, Mode: ModeUserspace}); r.Err != "" {
		t.Fatalf("Open over a stale socket: %s", r.Err)
	}
	closed(ModeUserspace)
}

// TestOverlay joins two namespaces by a veth pair (the underlay), runs a WireGuard
// device in each, configures them with Set and addresses and routes with
// datapath/route, and pings across: with the peer, then without it, then with it again.
func TestOverlay(t *testing.T) {
	privileged.Require(t)
	pid := os.Getpid()
	nsA, nsB := fmt.Sprintf("cvlan-wg-%d-a", pid), fmt.Sprintf("cvlan-wg-%d-b", pid)
	nameA, nameB := fmt.Sprintf("cvwg%da", pid), fmt.Sprintf("cvwg%db", pid)
	newNetns(t, nsA)
	newNetns(t, nsB)
	cleanSocket(t, nameA)
	cleanSocket(t, nameB)
	ip(t, "link", "add", "ul0", "netns", nsA, "type", "veth", "peer", "name", "ul0", "netns", nsB)
	ip(t, "-n", nsA, "addr", "add", "10.250.0.1/24", "dev", "ul0")
	ip(t, "-n", nsB, "addr", "add", "10.250.0.2/24", "dev", "ul0")
	ip(t, "-n", nsA, "link", "set", "ul0", "up")
	ip(t, "-n", nsB, "link", "set", "ul0", "up")
	want := ImplUserspace
	if kernelHasWireGuard(t, nsA) {
		want = ImplKernel
	}

	a, b := startHelper(t, nsA), startHelper(t, nsB)
	for _, x := range []struct {
		h    *helper
		name string
	}{{a, nameA}, {b, nameB}} {
		r := x.h.must(helperRequest{Op: "open", Name: x.name})
		if r.Impl != want {
			t.Fatalf("Open(%s) picked %s, want %s", x.name, r.Impl, want)
		}
		checkExpected(t, r.Impl)
	}
	if want == ImplUserspace {
		// The UAPI socket directory is shared by all namespaces: nameA is taken in B too.
		r := b.call(helperRequest{Op: "open", Name: nameA, Mode: ModeUserspace})
		if !r.InUse {
			t.Errorf("opening %s in %s while it runs in %s = %+v, want ErrInUse", nameA, nsB, nsA, r)
		}
	}

	kA, kB := testKey(101), testKey(102)
	wgA := helperRequest{Op: "set", Name: nameA, PrivateKey: kA.Text(), ListenPort: 51820, Peers: []Peer{{
		PublicKey: kB.NodePublic(), Endpoint: netip.MustParseAddrPort("10.250.0.2:51820"),
		AllowedIPs: prefixes("100.64.0.2/32", "fd00::2/128"),
	}}}
	wgB := helperRequest{Op: "set", Name: nameB, PrivateKey: kB.Text(), ListenPort: 51820, Peers: []Peer{{
		PublicKey: kA.NodePublic(), Endpoint: netip.MustParseAddrPort("10.250.0.1:51820"),
		AllowedIPs: prefixes("100.64.0.1/32", "fd00::1/128"), PersistentKeepalive: 25 * time.Second,
	}}}
	rtA := helperRequest{Op: "route", Route: route.Config{Interface: nameA, MTU: 1420,
		Addresses: prefixes("100.64.0.1/32", "fd00::1/128"), Routes: prefixes("100.64.0.0/24", "fd00::/64")}}
	rtB := helperRequest{Op: "route", Route: route.Config{Interface: nameB, MTU: 1420,
		Addresses: prefixes("100.64.0.2/32", "fd00::2/128"), Routes: prefixes("100.64.0.0/24", "fd00::/64")}}
	for _, x := range []struct {
		h        *helper
		wg, rt   helperRequest
		hostname string
	}{{a, wgA, rtA, nameA}, {b, wgB, rtB, nameB}} {
		if r := x.h.must(x.wg); r.NoChanges {
			t.Fatalf("first Set of %s changed nothing", x.hostname)
		}
		x.h.must(x.rt)
		if r := x.h.call(x.wg); !r.NoChanges {
			t.Errorf("second Set of %s = %+v, want ErrNoChanges", x.hostname, r)
		}
		if r := x.h.call(x.rt); !r.NoChanges {
			t.Errorf("second route Set of %s = %+v, want ErrNoChanges", x.hostname, r)
		}
	}

	pingUntil(t, nsA, "100.64.0.2", 20*time.Second)
	pingUntil(t, nsA, "fd00::2", 10*time.Second)
	pingUntil(t, nsB, "100.64.0.1", 10*time.Second)

	stats := a.must(helperRequest{Op: "stats", Name: nameA}).Stats
	if len(stats) != 1 {
		t.Fatalf("stats of %s: %+v, want one peer", nameA, stats)
	}
	s := stats[0]
	if !s.PublicKey.Equal(kB.NodePublic()) || s.Endpoint != netip.MustParseAddrPort("10.250.0.2:51820") ||
		s.LastHandshake.IsZero() || time.Since(s.LastHandshake) > time.Minute || s.RxBytes == 0 || s.TxBytes == 0 {
		t.Errorf("stats of %s: %+v, want B's key and endpoint, a recent handshake and traffic", nameA, s)
	}

	// Removing B from A cuts the overlay both ways.
	noPeers := wgA
	noPeers.Peers = nil
	a.must(noPeers)
	if st := a.must(helperRequest{Op: "stats", Name: nameA}).Stats; len(st) != 0 {
		t.Fatalf("stats of %s after removing its peer: %+v", nameA, st)
	}
	pingFails(t, nsA, "100.64.0.2")
	pingFails(t, nsB, "100.64.0.1")

	// Back again.
	a.must(wgA)
	pingUntil(t, nsA, "100.64.0.2", 20*time.Second)
	pingUntil(t, nsB, "100.64.0.1", 10*time.Second)

	for _, x := range []struct {
		h        *helper
		ns, name string
	}{{a, nsA, nameA}, {b, nsB, nameB}} {
		x.h.must(helperRequest{Op: "close", Name: x.name})
		if linkExists(t, x.ns, x.name) {
			t.Errorf("link %s still exists after Close", x.name)
		}
		if socketExists(x.name) {
			t.Errorf("UAPI socket of %s still exists after Close", x.name)
		}
	}
	if r := a.call(helperRequest{Op: "stats", Name: nameA}); !strings.Contains(r.Err, "no device") {
		t.Errorf("stats after close = %+v", r)
	}
}
