package relayconn

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/datapath/relay"
	"github.com/cvlan/cvlan/datapath/relay/framed"
	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// These tests run on loopback and need no privileges.

const waitFor = 20 * time.Second

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newPrivate(t testing.TB) key.Private {
	t.Helper()
	p, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeWG is a UDP socket standing for WireGuard's.
func fakeWG(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func portOf(c *net.UDPConn) uint16 { return c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// newProxy returns a proxy for the fake WireGuard wg, with fast bind retries.
func newProxy(t testing.TB, wg *net.UDPConn, machine key.Private, tune func(*Config)) *Proxy {
	t.Helper()
	cfg := Config{
		WireGuardPort: portOf(wg),
		Machine:       machine,
		BindRetry:     50 * time.Millisecond,
		RedialMin:     20 * time.Millisecond,
		RedialMax:     200 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	px, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := px.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return px
}

func mustSet(t testing.TB, px *Proxy, paths ...Path) map[key.NodePublic]netip.AddrPort {
	t.Helper()
	eps, err := px.Set(paths)
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	if len(eps) != len(paths) {
		t.Fatalf("Set returned %d endpoints for %d paths", len(eps), len(paths))
	}
	return eps
}

func status(px *Proxy, k key.NodePublic) PeerStatus {
	for _, st := range px.Status() {
		if st.Peer == k {
			return st
		}
	}
	return PeerStatus{}
}

// flow sends payload from the fake WireGuard from to endpoint to, until it arrives
// at the fake WireGuard at from the address wantSrc. It resends because a path may
// still be coming up; later copies of earlier payloads are skipped.
func flow(t testing.TB, from *net.UDPConn, to netip.AddrPort, at *net.UDPConn, wantSrc netip.AddrPort, payload string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	buf := make([]byte, maxPacket)
	for time.Now().Before(deadline) {
		if _, err := from.WriteToUDPAddrPort([]byte(payload), to); err != nil {
			t.Fatalf("sending %q: %v", payload, err)
		}
		at.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, src, err := at.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == payload {
				if src != wantSrc {
					t.Fatalf("%q arrived from %s, want %s", payload, src, wantSrc)
				}
				return
			}
		}
	}
	t.Fatalf("%q sent to %s never arrived at %s", payload, to, addrOf(at))
}

// exchange checks that n packets flow each way between two fake WireGuards.
func exchange(t testing.TB, wgA *net.UDPConn, epAtoB netip.AddrPort, wgB *net.UDPConn, epBtoA netip.AddrPort, tag string, n int) {
	t.Helper()
	for i := range n {
		flow(t, wgA, epAtoB, wgB, epBtoA, fmt.Sprintf("%s a->b %d", tag, i))
		flow(t, wgB, epBtoA, wgA, epAtoB, fmt.Sprintf("%s b->a %d", tag, i))
	}
}

// silent checks that nothing arrives at c for a while: the absence of a packet
// can only be observed over time.
func silent(t testing.TB, c *net.UDPConn, d time.Duration) {
	t.Helper()
	buf := make([]byte, maxPacket)
	c.SetReadDeadline(time.Now().Add(d))
	if n, src, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("%q arrived from %s", buf[:n], src)
	}
}

// freePorts returns n UDP ports on loopback that were free a moment ago.
func freePorts(t testing.TB, n int) []uint16 {
	t.Helper()
	var ports []uint16
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, portOf(c))
		defer c.Close()
	}
	return ports
}

func newToken(t testing.TB) session.Token {
	t.Helper()
	var tok session.Token
	if _, err := rand.Read(tok[:]); err != nil {
		t.Fatal(err)
	}
	return tok
}

func newSpec(t testing.TB, id session.ID) session.Spec {
	p := freePorts(t, 2)
	return session.Spec{ID: id, Ports: [2]uint16{p[0], p[1]}, Tokens: [2]session.Token{newToken(t), newToken(t)}}
}

// udpPath returns the path of one side of spec.
func udpPathOf(peer key.NodePublic, spec session.Spec, side session.Side) Path {
	return Path{
		Peer: peer, Mode: ModeUDP,
		Relay:   netip.AddrPortFrom(loopback, spec.Ports[side]),
		Session: spec.ID, Side: side, Token: spec.Tokens[side],
	}
}

// startRelay starts a UDP relay on loopback (Go path) serving specs.
func startRelay(t testing.TB, specs ...session.Spec) *relay.Relay {
	t.Helper()
	r, err := relay.New(relay.Options{XDP: xdprelay.ModeOff, Addr: loopback, CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.Set(specs); err != nil {
		t.Fatal(err)
	}
	return r
}

// testAuth is a framed.Authorizer over a table.
type testAuth struct {
	mu     sync.Mutex
	grants map[key.MachinePublic]framed.Grant
}

func (a *testAuth) Authorize(m key.MachinePublic) (framed.Grant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.grants[m]
	if !ok {
		return framed.Grant{}, errors.New("unknown machine")
	}
	return g, nil
}

// framedRelay is a framed relay served over TLS by httptest.
type framedRelay struct {
	srv  *framed.Server
	http *httptest.Server
}

func (r *framedRelay) url(transport string) string {
	if transport == framed.TransportWS {
		return "wss" + strings.TrimPrefix(r.http.URL, "https")
	}
	return r.http.URL
}

// startFramedRelay serves a framed relay that lets each node of nodes (machine key
// to node key) reach every other, in one tenant.
func startFramedRelay(t testing.TB, nodes map[key.MachinePublic]key.NodePublic) *framedRelay {
	t.Helper()
	auth := &testAuth{grants: map[key.MachinePublic]framed.Grant{}}
	for m, n := range nodes {
		peers := framed.PeerSet{}
		for _, o := range nodes {
			if o != n {
				peers[o] = struct{}{}
			}
		}
		auth.grants[m] = framed.Grant{Tenant: "t", Node: n, Peers: peers}
	}
	srv, err := framed.NewServer(framed.Config{Key: newPrivate(t), Authorizer: auth})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(noiseconn.Path, srv)
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.ErrorLog = nil
	hs.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
	})
	return &framedRelay{srv: srv, http: hs}
}

func framedPathOf(peer key.NodePublic, r *framedRelay, urls ...string) Path {
	return Path{Peer: peer, Mode: ModeFramed, RelayKey: r.srv.Public(), URLs: urls}
}

// closedURL is an https URL on a loopback port nothing listens on.
func closedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "https://" + addr
}

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting file descriptors: %v", err)
	}
	return len(ents)
}

// goroutinesBackTo waits until no more than base goroutines run.
func goroutinesBackTo(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), base, bytes.TrimSpace(buf))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// statusEventually waits until the status of px's path for k satisfies ok;
// counters move after a packet is handed on, so they may lag its arrival.
func statusEventually(t testing.TB, px *Proxy, k key.NodePublic, what string, ok func(PeerStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		st := status(px, k)
		if ok(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
