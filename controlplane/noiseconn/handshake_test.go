package noiseconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

const testTimeout = 20 * time.Second

func mustKey(t testing.TB) noise.DHKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k noise.DHKey) key.MachinePublic { return key.MachinePublicFromRaw([32]byte(k.Public)) }

// testController is an httptest TLS server that upgrades Path with a Server.
type testController struct {
	url      string
	key      noise.DHKey
	server   *Server
	calls    atomic.Int32
	greeting []byte // written by the server right after the upgrade, if set
	conns    chan *Conn
	cert     *x509.Certificate

	mu   sync.Mutex
	errs []error
}

func newTestController(t *testing.T, authorize Authorize) *testController {
	t.Helper()
	tc := &testController{key: mustKey(t), conns: make(chan *Conn, 16)}
	tc.server = &Server{Key: tc.key}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		c, err := tc.server.Upgrade(w, r, func(peer key.MachinePublic, hello []byte) ([]byte, bool) {
			tc.calls.Add(1)
			return authorize(peer, hello)
		})
		if err != nil {
			tc.mu.Lock()
			tc.errs = append(tc.errs, err)
			tc.mu.Unlock()
			return
		}
		if tc.greeting != nil {
			if err := c.WriteMsg(tc.greeting); err != nil {
				t.Errorf("writing the greeting: %v", err)
			}
		}
		select {
		case tc.conns <- c:
		default:
			c.Close()
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS errors the tests cause on purpose
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		for {
			select {
			case c := <-tc.conns:
				c.Close()
			default:
				return
			}
		}
	})
	tc.url, tc.cert = srv.URL, srv.Certificate()
	return tc
}

// serverConn returns the next Conn the controller accepted.
func (tc *testController) serverConn(t *testing.T) *Conn {
	t.Helper()
	select {
	case c := <-tc.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(testTimeout):
		t.Fatal("the controller accepted no connection")
		return nil
	}
}

// lastErr returns the last error Upgrade returned.
func (tc *testController) lastErr() error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.errs) == 0 {
		return nil
	}
	return tc.errs[len(tc.errs)-1]
}

func (tc *testController) dial(t *testing.T, machine noise.DHKey, hello []byte) (*Conn, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, reply, err := Dial(ctx, DialConfig{URL: tc.url, ControllerKey: pub(tc.key), Machine: machine, Hello: hello})
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, reply, err
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	machine := mustKey(t)
	var gotPeer key.MachinePublic
	var gotHello []byte
	tc := newTestController(t, func(peer key.MachinePublic, hello []byte) ([]byte, bool) {
		gotPeer, gotHello = peer, bytes.Clone(hello)
		return []byte("welcome"), true
	})
	tc.greeting = []byte("greeting")
	agent, reply, err := tc.dial(t, machine, []byte("hello from the agent"))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	srv := tc.serverConn(t)
	if string(reply) != "welcome" {
		t.Errorf("reply = %q, want %q", reply, "welcome")
	}
	if !gotPeer.Equal(pub(machine)) || string(gotHello) != "hello from the agent" {
		t.Errorf("authorize got (%v, %q), want (%v, %q)", gotPeer, gotHello, pub(machine), "hello from the agent")
	}
	if !srv.Peer().Equal(pub(machine)) || !agent.Peer().Equal(pub(tc.key)) {
		t.Errorf("Peer() = %v on the server, %v on the agent", srv.Peer(), agent.Peer())
	}
	if agent.RemoteAddr() == nil || srv.RemoteAddr() == nil {
		t.Errorf("RemoteAddr is nil")
	}
	if m, err := agent.ReadMsg(); err != nil || string(m) != "greeting" {
		t.Fatalf("agent ReadMsg = %q, %v; want the greeting", m, err)
	}

	big := randBytes(t, 1<<20)
	msgs := [][]byte{
		[]byte("ping"), {}, big, randBytes(t, maxPlain-4), randBytes(t, maxPlain-3),
		randBytes(t, maxPlain), randBytes(t, 3*maxPlain+7),
	}
	for i := range 200 {
		msgs = append(msgs, []byte(fmt.Sprintf("small %d", i)))
	}
	for _, dir := range []struct {
		name     string
		from, to *Conn
	}{{"agent to controller", agent, srv}, {"controller to agent", srv, agent}} {
		t.Run(dir.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				for _, m := range msgs {
					if err := dir.from.WriteMsg(m); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			for i, want := range msgs {
				got, err := dir.to.ReadMsg()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("message %d: got %d bytes, want %d (equal: false)", i, len(got), len(want))
				}
			}
			if err := <-errc; err != nil {
				t.Fatalf("WriteMsg: %v", err)
			}
		})
	}

	t.Run("concurrent writers", func(t *testing.T) {
		const writers, each = 8, 100
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					m := fmt.Appendf(nil, "%d %d ", w, i)
					m = append(m, bytes.Repeat([]byte{byte(w)}, (i*7919)%(2*maxPlain))...)
					if err := agent.WriteMsg(m); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
			})
		}
		next := make([]int, writers)
		for range writers * each {
			m, err := srv.ReadMsg()
			if err != nil {
				t.Fatalf("ReadMsg: %v", err)
			}
			var w, i int
			if _, err := fmt.Sscanf(string(m), "%d %d ", &w, &i); err != nil || w < 0 || w >= writers {
				t.Fatalf("message %.20q: %v", m, err)
			}
			if i != next[w] {
				t.Fatalf("writer %d: message %d, want %d", w, i, next[w])
			}
			next[w]++
			pad := m[len(fmt.Sprintf("%d %d ", w, i)):]
			if len(pad) != (i*7919)%(2*maxPlain) || bytes.Count(pad, []byte{byte(w)}) != len(pad) {
				t.Fatalf("writer %d message %d: corrupted padding", w, i)
			}
		}
		wg.Wait()
	})

	t.Run("message limit", func(t *testing.T) {
		if err := agent.WriteMsg(make([]byte, DefaultMaxMessage+1)); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("WriteMsg over the limit: %v, want ErrMessageTooLarge", err)
		}
		if err := agent.WriteMsg([]byte("still usable")); err != nil {
			t.Fatal(err)
		}
		if m, err := srv.ReadMsg(); err != nil || string(m) != "still usable" {
			t.Fatalf("ReadMsg = %q, %v", m, err)
		}
	})

	t.Run("close", func(t *testing.T) {
		agent.Close()
		if _, err := srv.ReadMsg(); err != io.EOF {
			t.Fatalf("ReadMsg after the peer closed: %v, want io.EOF", err)
		}
		if _, err := srv.ReadMsg(); err != io.EOF {
			t.Fatalf("second ReadMsg: %v, want io.EOF again", err)
		}
	})
}

func TestDialPlainHTTP(t *testing.T) {
	k := mustKey(t)
	s := &Server{Key: k}
	conns := make(chan *Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prefix"+Path {
			http.NotFound(w, r)
			return
		}
		c, err := s.Upgrade(w, r, func(key.MachinePublic, []byte) ([]byte, bool) { return nil, true })
		if err == nil {
			conns <- c
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, reply, err := Dial(ctx, DialConfig{URL: srv.URL + "/prefix/", ControllerKey: pub(k), Machine: mustKey(t)})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if len(reply) != 0 {
		t.Errorf("reply = %q, want empty", reply)
	}
	sc := <-conns
	defer sc.Close()
	if err := sc.WriteMsg([]byte("over plain HTTP")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.ReadMsg(); err != nil || string(m) != "over plain HTTP" {
		t.Fatalf("ReadMsg = %q, %v", m, err)
	}
}

func TestWrongControllerKey(t *testing.T) {
	tc := newTestController(t, func(key.MachinePublic, []byte) ([]byte, bool) { return nil, true })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, _, err := Dial(ctx, DialConfig{URL: tc.url, ControllerKey: pub(mustKey(t)), Machine: mustKey(t)})
	if !errors.Is(err, ErrControllerKey) {
		t.Fatalf("Dial with another controller's key: %v, want ErrControllerKey", err)
	}
	t.Logf("Dial: %v", err)
	if !strings.Contains(err.Error(), "could not decrypt the handshake") {
		t.Errorf("error %q does not say what happened", err)
	}
	if n := tc.calls.Load(); n != 0 {
		t.Errorf("authorize called %d times", n)
	}
	if err := tc.lastErr(); !errors.Is(err, ErrHandshake) {
		t.Errorf("Upgrade returned %v, want ErrHandshake", err)
	}
}

// fakeMsg2 returns a msg2 that a controller with key fake made in a handshake of
// its own: it cannot read the agent's msg1, so this is all it can send.
func fakeMsg2(t *testing.T, fake noise.DHKey, payload []byte) []byte {
	t.Helper()
	ini, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeIK,
		Initiator: true, Prologue: []byte(Protocol), StaticKeypair: mustKey(t), PeerStatic: fake.Public})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeIK,
		Prologue: []byte(Protocol), StaticKeypair: fake})
	if err != nil {
		t.Fatal(err)
	}
	msg1, _, _, err := ini.WriteMessage(nil, make([]byte, 8))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := resp.ReadMessage(nil, msg1); err != nil {
		t.Fatal(err)
	}
	msg2, _, _, err := resp.WriteMessage(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	return msg2
}

func TestFakeController(t *testing.T) {
	real, fake := mustKey(t), mustKey(t)
	for _, tt := range []struct {
		name   string
		status int
		header string
	}{
		{"101 with a msg2 from another key", 101, base64.StdEncoding.EncodeToString(fakeMsg2(t, fake, []byte("welcome")))},
		{"403 with a msg2 from another key", 403, base64.StdEncoding.EncodeToString(fakeMsg2(t, fake, []byte("go away")))},
		{"101 with garbage", 101, base64.StdEncoding.EncodeToString(randBytes(t, 48))},
		{"101 with bad base64", 101, "!!!"},
		{"401 with garbage", 401, base64.StdEncoding.EncodeToString(randBytes(t, 100))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer nc.Close()
				fmt.Fprintf(nc, "HTTP/1.1 %d %s\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s: %s\r\nContent-Length: 0\r\n\r\n",
					tt.status, http.StatusText(tt.status), Protocol, HandshakeHeader, tt.header)
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c, _, err := Dial(ctx, DialConfig{URL: srv.URL, ControllerKey: pub(real), Machine: mustKey(t)})
			if c != nil {
				c.Close()
			}
			if !errors.Is(err, ErrControllerKey) {
				t.Fatalf("Dial: %v, want ErrControllerKey", err)
			}
			var refused *RefusedError
			if errors.As(err, &refused) {
				t.Fatalf("Dial returned a RefusedError for a forged refusal")
			}
		})
	}
}

func TestRefused(t *testing.T) {
	tc := newTestController(t, func(key.MachinePublic, []byte) ([]byte, bool) {
		return []byte("no such machine"), false
	})
	c, _, err := tc.dial(t, mustKey(t), []byte("enroll me"))
	if c != nil {
		t.Fatalf("Dial returned a Conn for a refused machine")
	}
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("Dial: %v, want a *RefusedError", err)
	}
	if refused.Status != http.StatusForbidden || string(refused.Payload) != "no such machine" {
		t.Errorf("RefusedError = %d %q, want 403 %q", refused.Status, refused.Payload, "no such machine")
	}
	if errors.Is(err, ErrControllerKey) {
		t.Errorf("a refusal wraps ErrControllerKey")
	}
	if err := tc.lastErr(); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("Upgrade returned %v, want ErrNotAuthorized", err)
	}
}

// makeMsg1 builds an agent's msg1 with the given timestamp.
func makeMsg1(t testing.TB, controller, machine noise.DHKey, ts time.Time, hello []byte) []byte {
	return makeMsg1Rand(t, nil, controller, machine, ts, hello)
}

// makeMsg1Rand is makeMsg1 with the ephemeral key drawn from rng (nil: crypto/rand).
func makeMsg1Rand(t testing.TB, rng io.Reader, controller, machine noise.DHKey, ts time.Time, hello []byte) []byte {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{CipherSuite: cipherSuite, Pattern: noise.HandshakeIK,
		Initiator: true, Prologue: []byte(Protocol), StaticKeypair: machine, PeerStatic: controller.Public,
		Random: rng})
	if err != nil {
		t.Fatal(err)
	}
	payload := binary.BigEndian.AppendUint64(nil, uint64(ts.UnixNano()))
	msg1, _, _, err := hs.WriteMessage(nil, append(payload, hello...))
	if err != nil {
		t.Fatal(err)
	}
	return msg1
}

// post sends a handshake request with the given headers on its own connection and
// returns the response status, the JSON error code and whether a handshake came back.
func post(t *testing.T, rawURL, method string, header map[string]string) (status int, code string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(testTimeout))
	req, err := http.NewRequest(method, rawURL+Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if err := req.Write(nc); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		var e struct{ Error, Code string }
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatalf("HTTP %d body: %v", resp.StatusCode, err)
		}
		if e.Error == "" {
			t.Errorf("HTTP %d without an error message", resp.StatusCode)
		}
		code = e.Code
	}
	return resp.StatusCode, code
}

func upgradeHeaders(msg1 []byte) map[string]string {
	return map[string]string{"Upgrade": Protocol, "Connection": "Upgrade",
		HandshakeHeader: base64.StdEncoding.EncodeToString(msg1)}
}

func TestReplay(t *testing.T) {
	tc := newTestController(t, func(key.MachinePublic, []byte) ([]byte, bool) { return nil, true })
	machine := mustKey(t)
	now := time.Now()
	msg1 := makeMsg1(t, tc.key, machine, now, []byte("hello"))
	if status, code := post(t, tc.url, "POST", upgradeHeaders(msg1)); status != 101 {
		t.Fatalf("first handshake: %d %s, want 101", status, code)
	}
	tc.serverConn(t)
	for _, tt := range []struct {
		name   string
		msg1   []byte
		status int
		code   string
	}{
		{"the same msg1 again", msg1, 403, CodeReplayed},
		{"an older timestamp in the window", makeMsg1(t, tc.key, machine, now.Add(-time.Second), nil), 403, CodeReplayed},
		{"the same timestamp", makeMsg1(t, tc.key, machine, now, nil), 403, CodeReplayed},
		{"a stale timestamp", makeMsg1(t, tc.key, mustKey(t), now.Add(-5*time.Minute), nil), 403, CodeClockSkew},
		{"a future timestamp", makeMsg1(t, tc.key, mustKey(t), now.Add(5*time.Minute), nil), 403, CodeClockSkew},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, code := post(t, tc.url, "POST", upgradeHeaders(tt.msg1))
			if status != tt.status || code != tt.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}
	if n := tc.calls.Load(); n != 1 {
		t.Errorf("authorize called %d times, want 1", n)
	}
	// Another machine is not affected by the first one's timestamps.
	if status, code := post(t, tc.url, "POST", upgradeHeaders(makeMsg1(t, tc.key, mustKey(t), now, nil))); status != 101 {
		t.Fatalf("another machine: %d %s, want 101", status, code)
	}
	tc.serverConn(t)
	// A later handshake of the first machine is accepted.
	if _, _, err := tc.dial(t, machine, nil); err != nil {
		t.Fatalf("Dial after the replays: %v", err)
	}

	t.Run("Dial with a skewed clock", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_, _, err := Dial(ctx, DialConfig{URL: tc.url, ControllerKey: pub(tc.key), Machine: mustKey(t),
			Now: func() time.Time { return time.Now().Add(-time.Hour) }})
		t.Logf("Dial: %v", err)
		if err == nil || !strings.Contains(err.Error(), CodeClockSkew) || errors.Is(err, ErrControllerKey) {
			t.Fatalf("Dial: %v, want an HTTP 403 clock_skew error", err)
		}
		if err := tc.lastErr(); !errors.Is(err, ErrClockSkew) {
			t.Errorf("Upgrade returned %v, want ErrClockSkew", err)
		}
	})
}

func TestReplayPrune(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := &Server{Key: mustKey(t), Now: func() time.Time { return now }, MaxSkew: time.Minute}
	a, b := pub(mustKey(t)), pub(mustKey(t))
	if err := s.checkFresh(a, now.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if err := s.checkFresh(a, now.UnixNano()); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	now = now.Add(2 * time.Minute)
	if err := s.checkFresh(b, now.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if len(s.last) != 1 {
		t.Errorf("%d entries after the window passed, want 1", len(s.last))
	}
}

func TestUpgradeBadRequests(t *testing.T) {
	tc := newTestController(t, func(key.MachinePublic, []byte) ([]byte, bool) { return nil, true })
	valid := base64.StdEncoding.EncodeToString(makeMsg1(t, tc.key, mustKey(t), time.Now(), nil))
	for _, tt := range []struct {
		name   string
		method string
		header map[string]string
		status int
		code   string
	}{
		{"GET", "GET", map[string]string{"Upgrade": Protocol, "Connection": "Upgrade", HandshakeHeader: valid}, 405, CodeMethod},
		{"no Upgrade", "POST", map[string]string{HandshakeHeader: valid}, 426, CodeUpgradeRequired},
		{"another protocol", "POST", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", HandshakeHeader: valid}, 426, CodeUpgradeRequired},
		{"no handshake", "POST", map[string]string{"Upgrade": Protocol, "Connection": "keep-alive, Upgrade"}, 400, CodeBadRequest},
		{"bad base64", "POST", map[string]string{"Upgrade": Protocol, "Connection": "Upgrade", HandshakeHeader: "%%%"}, 400, CodeBadRequest},
		{"garbage", "POST", upgradeHeaders(randBytes(t, 200)), 401, CodeControllerKey},
		{"short", "POST", upgradeHeaders([]byte{1, 2, 3}), 401, CodeControllerKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, code := post(t, tc.url, tt.method, tt.header)
			if status != tt.status || code != tt.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}
	if n := tc.calls.Load(); n != 0 {
		t.Errorf("authorize called %d times", n)
	}
}

func TestDialContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := Dial(ctx, DialConfig{URL: srv.URL, ControllerKey: pub(mustKey(t)), Machine: mustKey(t)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial to a stalled controller: %v, want context.DeadlineExceeded", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go cancel()
	_, _, err = Dial(ctx, DialConfig{URL: srv.URL, ControllerKey: pub(mustKey(t)), Machine: mustKey(t)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestDialVerifiesTLS(t *testing.T) {
	tc := newTestController(t, func(key.MachinePublic, []byte) ([]byte, bool) { return nil, true })
	trusted := x509.NewCertPool()
	trusted.AddCert(tc.cert)
	for _, tt := range []struct {
		name  string
		roots *x509.CertPool
		ok    bool
	}{{"trusted certificate", trusted, true}, {"unknown certificate", x509.NewCertPool(), false}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c, _, err := Dial(ctx, DialConfig{URL: tc.url, ControllerKey: pub(tc.key), Machine: mustKey(t),
				TLSConfig: &tls.Config{RootCAs: tt.roots, NextProtos: []string{"h2"}}})
			if c != nil {
				c.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("Dial: %v", err)
			}
			var unknown x509.UnknownAuthorityError
			if !tt.ok && !errors.As(err, &unknown) {
				t.Fatalf("Dial: %v, want x509.UnknownAuthorityError", err)
			}
		})
	}
}

func TestDialConfigErrors(t *testing.T) {
	ctx := context.Background()
	good := DialConfig{URL: "https://127.0.0.1:1", ControllerKey: pub(mustKey(t)), Machine: mustKey(t)}
	for _, tt := range []struct {
		name string
		edit func(*DialConfig)
	}{
		{"ftp URL", func(c *DialConfig) { c.URL = "ftp://x" }},
		{"no host", func(c *DialConfig) { c.URL = "https://" }},
		{"no controller key", func(c *DialConfig) { c.ControllerKey = key.MachinePublic{} }},
		{"no machine key", func(c *DialConfig) { c.Machine = noise.DHKey{} }},
		{"hello too large", func(c *DialConfig) { c.Hello = make([]byte, maxHello+1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			if _, _, err := Dial(ctx, cfg); err == nil {
				t.Fatal("Dial succeeded")
			}
		})
	}
}
