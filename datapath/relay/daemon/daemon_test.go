package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/datapath/relay/framed"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// loopbackConfig is a valid Config on 127.0.0.1 with ephemeral ports and XDP off.
func loopbackConfig(t *testing.T) Config {
	t.Helper()
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	c.RelayAddress = netip.MustParseAddr("127.0.0.1")
	c.XDP = xdprelay.ModeOff
	c.FramedListen = "127.0.0.1:0"
	c.STUNListen = "127.0.0.1:0"
	c.MetricsListen = "127.0.0.1:0"
	c.LogLevel = "debug"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// started runs Run in the background and returns its addresses, its log and the
// channel of its result.
func started(t *testing.T, ctx context.Context, cfg Config) (Addrs, *syncBuffer, <-chan error) {
	t.Helper()
	logs := new(syncBuffer)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	readyc := make(chan Addrs, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log, func(a Addrs) { readyc <- a }) }()
	select {
	case a := <-readyc:
		return a, logs, done
	case err := <-done:
		t.Fatalf("Run: %v\n%s", err, logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("Run did not become ready\n%s", logs)
	}
	panic("unreachable")
}

var httpc = &http.Client{Timeout: 5 * time.Second}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// stunBinding sends one Binding request to addr and returns the mapped address.
func stunBinding(t *testing.T, addr net.Addr) (mapped, local netip.AddrPort) {
	t.Helper()
	uc, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	c, err := stun.NewClient(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got stun.XORMappedAddress
	var cbErr error
	err = c.Do(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint), func(e stun.Event) {
		if e.Error != nil {
			cbErr = e.Error
			return
		}
		cbErr = got.GetFrom(e.Message)
	})
	if err != nil || cbErr != nil {
		t.Fatalf("STUN binding: %v, %v", err, cbErr)
	}
	ip, _ := netip.AddrFromSlice(got.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(got.Port)), uc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestRun(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.DrainGrace = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs, logs, done := started(t, ctx, cfg)
	base := "http://" + addrs.Metrics.String()

	// The key is in the data directory, 0600, and in the log.
	fi, err := os.Stat(filepath.Join(cfg.DataDir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("relay.key: %v %v", fi, err)
	}
	priv, created, err := LoadOrCreateKey(cfg.DataDir)
	if err != nil || created || RelayPublic(priv) != addrs.Key {
		t.Fatalf("key file: %v created=%v, %v vs %v", err, created, RelayPublic(priv), addrs.Key)
	}
	if !strings.Contains(logs.String(), addrs.Key.String()) || !strings.HasPrefix(addrs.Key.String(), "relaykey:") {
		t.Fatalf("relay key %s not logged:\n%s", addrs.Key, logs)
	}

	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}

	mapped, local := stunBinding(t, addrs.STUN)
	if mapped != local {
		t.Fatalf("STUN mapped address %v, want %v", mapped, local)
	}

	// Every framed client is refused, over TCP and WebSocket, with the reason logged.
	machine, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"https", "wss"} {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := framed.Dial(dctx, framed.DialConfig{URL: scheme + "://" + addrs.Framed.String(), RelayKey: addrs.Key, Machine: machine})
		dcancel()
		var refused *noiseconn.RefusedError
		if !errors.As(err, &refused) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("%s: framed.Dial: %v, want an authenticated refusal", scheme, err)
		}
	}
	wantLog := fmt.Sprintf("machine %s refused: %s", machine.MachinePublic(), ErrNoController)
	if !strings.Contains(logs.String(), wantLog) {
		t.Fatalf("log lacks %q:\n%s", wantLog, logs)
	}

	_, metrics := get(t, base+"/metrics")
	for _, name := range []string{
		"cvlan_relay_packets_total", "cvlan_relay_sessions", // UDP relay
		"cvlan_relay_framed_clients", `cvlan_relay_framed_refused_total 2`, // framed
		"cvlan_relay_stun_requests_total 1", // STUN
		"go_goroutines", "process_open_fds", // Go and process
	} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}

	// Drain: /healthz turns 503 and new framed connections are refused, then Run
	// returns nil and every port is closed.
	cancel()
	deadline := time.Now().Add(cfg.DrainGrace)
	for {
		resp, err := httpc.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never turned 503 during the drain (last %v)", err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = framed.Dial(dctx, framed.DialConfig{URL: "https://" + addrs.Framed.String(), RelayKey: addrs.Key, Machine: machine})
	dcancel()
	var refused *noiseconn.RefusedError
	if err == nil || errors.As(err, &refused) {
		t.Fatalf("framed.Dial during the drain: %v, want the connection refused", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(cfg.DrainGrace + 20*time.Second):
		t.Fatal("Run did not return after the drain")
	}
	for _, a := range []net.Addr{addrs.Framed, addrs.Metrics} {
		ln, err := net.Listen("tcp", a.String())
		if err != nil {
			t.Errorf("%s still in use after Run: %v", a, err)
			continue
		}
		ln.Close()
	}
	pc, err := net.ListenPacket("udp", addrs.STUN.String())
	if err != nil {
		t.Errorf("STUN port %s still in use after Run: %v", addrs.STUN, err)
	} else {
		pc.Close()
	}
}

// TestRunNoGrace checks that a zero grace period drains at once.
func TestRunNoGrace(t *testing.T) {
	cfg := loopbackConfig(t)
	cfg.DrainGrace = 0
	ctx, cancel := context.WithCancel(context.Background())
	_, _, done := started(t, ctx, cfg)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestRunDrainKeepsFramed checks, with an authorizer that admits a client (which
// only a test can install), that an existing framed connection stays up during the
// grace period and is closed at its end.
func TestRunDrainKeepsFramed(t *testing.T) {
	node, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { testAuthorizer = nil }()
	testAuthorizer = framed.AuthorizerFunc(func(key.MachinePublic) (framed.Grant, error) {
		return framed.Grant{Tenant: "t", Node: node.NodePublic(), Peers: framed.PeerSet{}}, nil
	})
	cfg := loopbackConfig(t)
	cfg.DrainGrace = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs, logs, done := started(t, ctx, cfg)
	machine, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := framed.Dial(dctx, framed.DialConfig{URL: "https://" + addrs.Framed.String(), RelayKey: addrs.Key,
		Machine: machine, KeepAlive: -1, ReadTimeout: -1})
	dcancel()
	if err != nil {
		t.Fatalf("framed.Dial: %v\n%s", err, logs)
	}
	defer c.Close()
	other, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	// alive sends to a peer it may not reach and expects the relay's error frame.
	alive := func() error {
		if err := c.Send(other.NodePublic(), []byte("x")); err != nil {
			return err
		}
		_, _, err := c.Recv()
		var re *framed.RelayError
		if errors.As(err, &re) && re.Code == framed.CodeNotAllowed {
			return nil
		}
		return fmt.Errorf("Recv: %w", err)
	}
	if err := alive(); err != nil {
		t.Fatal(err)
	}
	cancel()
	for deadline := time.Now().Add(cfg.DrainGrace); ; {
		resp, err := httpc.Get("http://" + addrs.Metrics.String() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz never turned 503")
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronization
	}
	if err := alive(); err != nil {
		t.Fatalf("framed connection during the drain: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(cfg.DrainGrace + 20*time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if _, _, err := c.Recv(); err == nil {
		t.Fatal("framed connection still up after the drain")
	}
}

// TestRunErrors checks that Run fails with context when a port is taken or the
// data directory cannot be used, and leaves nothing listening.
func TestRunErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := loopbackConfig(t)
	cfg.MetricsListen = taken.Addr().String()
	log := slog.New(slog.DiscardHandler)
	err = Run(context.Background(), cfg, log, nil)
	if err == nil || !strings.Contains(err.Error(), "metrics: listening on") {
		t.Fatalf("metrics port taken: %v", err)
	}

	cfg = loopbackConfig(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = file
	if err := Run(context.Background(), cfg, log, nil); err == nil || !strings.Contains(err.Error(), "data directory") {
		t.Fatalf("data_dir is a file: %v", err)
	}

	cfg = loopbackConfig(t)
	cfg.TLSCert, cfg.TLSKey = filepath.Join(cfg.DataDir, "none.crt"), filepath.Join(cfg.DataDir, "none.key")
	if err := Run(context.Background(), cfg, log, nil); err == nil || !strings.Contains(err.Error(), "loading TLS certificate") {
		t.Fatalf("missing certificate: %v", err)
	}
}
