package framed

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
)

// testAuth is an Authorizer over a table, safe for concurrent use.
type testAuth struct {
	mu     sync.Mutex
	grants map[key.MachinePublic]Grant
}

func (a *testAuth) Authorize(m key.MachinePublic) (Grant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.grants[m]
	if !ok {
		return Grant{}, errors.New("unknown machine")
	}
	return g, nil
}

func (a *testAuth) set(m key.MachinePublic, g Grant) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.grants[m] = g
}

type testRelay struct {
	srv  *Server
	auth *testAuth
	http *httptest.Server
}

func (r *testRelay) url(transport string) string {
	if transport == TransportWS {
		return "wss" + strings.TrimPrefix(r.http.URL, "https")
	}
	return r.http.URL
}

func newPrivate(t testing.TB) key.Private {
	t.Helper()
	p, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestRelay(t testing.TB, tune func(*Config)) *testRelay {
	t.Helper()
	auth := &testAuth{grants: map[key.MachinePublic]Grant{}}
	cfg := Config{Key: newPrivate(t), Authorizer: auth}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := NewServer(cfg)
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
	return &testRelay{srv: srv, auth: auth, http: hs}
}

// node is a test node: its keys and its client.
type node struct {
	machine key.Private
	node    key.NodePublic
	c       *Client
}

// addNode authorizes a new node in tenant with peers and connects it.
func (r *testRelay) addNode(t testing.TB, transport, tenant string, peers ...key.NodePublic) *node {
	t.Helper()
	n := &node{machine: newPrivate(t), node: newPrivate(t).NodePublic()}
	ps := PeerSet{}
	for _, p := range peers {
		ps[p] = struct{}{}
	}
	r.auth.set(n.machine.MachinePublic(), Grant{Tenant: tenant, Node: n.node, Peers: ps})
	n.c = r.dial(t, transport, n.machine)
	r.waitRegistered(t, tenant, n.node, nil)
	return n
}

// waitRegistered waits until the relay serves node with a connection other than
// old: the client's Dial returns when it has the 101, which may be before the relay
// registered it.
func (r *testRelay) waitRegistered(t testing.TB, tenant string, node key.NodePublic, old *client) {
	t.Helper()
	eventually(t, "the relay to register "+node.String(), func() bool {
		cl := r.registered(tenant, node)
		return cl != nil && cl != old
	})
}

func (r *testRelay) registered(tenant string, node key.NodePublic) *client {
	r.srv.mu.RLock()
	defer r.srv.mu.RUnlock()
	return r.srv.clients[peerID{tenant, node}]
}

func (r *testRelay) dial(t testing.TB, transport string, m key.Private) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, DialConfig{URL: r.url(transport), RelayKey: r.srv.Public(), Machine: m})
	if err != nil {
		t.Fatalf("dialing over %s: %v", transport, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// allow lets n reach peers (replacing its grant) without reconnecting.
func (r *testRelay) grant(n *node, tenant string, peers ...key.NodePublic) PeerSet {
	ps := PeerSet{}
	for _, p := range peers {
		ps[p] = struct{}{}
	}
	r.auth.set(n.machine.MachinePublic(), Grant{Tenant: tenant, Node: n.node, Peers: ps})
	return ps
}

// recv is one Recv result.
type recv struct {
	src key.NodePublic
	pkt []byte
	err error
}

// recvWithin runs Recv with a deadline.
func recvWithin(t testing.TB, c *Client, d time.Duration) recv {
	t.Helper()
	ch := make(chan recv, 1)
	go func() {
		src, pkt, err := c.Recv()
		ch <- recv{src, bytes.Clone(pkt), err}
	}()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		t.Fatalf("no frame within %v", d)
		return recv{}
	}
}

func wantPacket(t testing.TB, c *Client, src key.NodePublic, pkt []byte) {
	t.Helper()
	r := recvWithin(t, c, 10*time.Second)
	if r.err != nil {
		t.Fatalf("Recv: %v", r.err)
	}
	if !r.src.Equal(src) || !bytes.Equal(r.pkt, pkt) {
		t.Fatalf("got %q from %s, want %q from %s", r.pkt, r.src, pkt, src)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pair connects two nodes of one tenant that may reach each other.
func pair(t testing.TB, r *testRelay, transport string) (a, b *node) {
	t.Helper()
	a = r.addNode(t, transport, "t1")
	b = r.addNode(t, transport, "t1", a.node)
	r.grant(a, "t1", b.node)
	// a's grant was given before b existed: reconnect it with the new one.
	old := r.registered("t1", a.node)
	a.c.Close()
	a.c = r.dial(t, transport, a.machine)
	r.waitRegistered(t, "t1", a.node, old)
	return a, b
}

func TestExchange(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		t.Run(tr, func(t *testing.T) {
			r := newTestRelay(t, nil)
			a, b := pair(t, r, tr)
			if a.c.Transport() != tr {
				t.Fatalf("transport %s, want %s", a.c.Transport(), tr)
			}
			for i := range 50 {
				pkt := fmt.Appendf(nil, "packet %d from a", i)
				if err := a.c.Send(b.node, pkt); err != nil {
					t.Fatal(err)
				}
				wantPacket(t, b.c, a.node, pkt)
				back := fmt.Appendf(nil, "packet %d from b", i)
				if err := b.c.Send(a.node, back); err != nil {
					t.Fatal(err)
				}
				wantPacket(t, a.c, b.node, back)
			}
			big := bytes.Repeat([]byte{0xab}, MaxPacket)
			if err := a.c.Send(b.node, big); err != nil {
				t.Fatal(err)
			}
			wantPacket(t, b.c, a.node, big)
			if got := r.srv.Clients()[tr]; got != 2 {
				t.Errorf("%d %s clients, want 2", got, tr)
			}
			idx := trIndex(tr)
			if in := r.srv.metrics.tr[idx].framesIn.Load(); in < 101 {
				t.Errorf("%d frames in over %s, want ≥ 101", in, tr)
			}
		})
	}
}

func TestOtherTenant(t *testing.T) {
	r := newTestRelay(t, nil)
	a, b := pair(t, r, TransportTCP)
	// c is in another tenant. Its authorizer (wrongly) lets it reach a's key: the
	// relay still never delivers across tenants.
	c := r.addNode(t, TransportWS, "t2", a.node)
	if err := c.c.Send(a.node, []byte("cross-tenant")); err != nil {
		t.Fatal(err)
	}
	got := recvWithin(t, c.c, 10*time.Second)
	var gone *PeerGoneError
	if !errors.As(got.err, &gone) || !gone.Peer.Equal(a.node) || gone.Reason != GoneNotHere {
		t.Fatalf("cross-tenant send: got %+v, want peer-gone (not here) for a", got)
	}
	// A key its authorizer does not allow gets an error frame.
	if err := c.c.Send(b.node, []byte("not allowed")); err != nil {
		t.Fatal(err)
	}
	got = recvWithin(t, c.c, 10*time.Second)
	var re *RelayError
	if !errors.As(got.err, &re) || re.Code != CodeNotAllowed || !re.Subject.Equal(b.node) {
		t.Fatalf("not-allowed send: got %+v, want a not-allowed error frame", got)
	}
	// And a cannot reach c.
	if err := a.c.Send(c.node, []byte("to t2")); err != nil {
		t.Fatal(err)
	}
	got = recvWithin(t, a.c, 10*time.Second)
	if !errors.As(got.err, &re) || re.Code != CodeNotAllowed {
		t.Fatalf("a to t2: got %+v, want not allowed", got)
	}
	d := r.srv.Drops()
	if d[dropNotAllowed] != 2 || d[dropUnknownPeer] != 1 {
		t.Errorf("drops %v, want 2 not_allowed and 1 unknown_peer", d)
	}
	// a and b still talk.
	a.c.Send(b.node, []byte("still here"))
	wantPacket(t, b.c, a.node, []byte("still here"))
}

func TestRefused(t *testing.T) {
	r := newTestRelay(t, nil)
	a := r.addNode(t, TransportTCP, "t1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tr := range []string{TransportTCP, TransportWS} {
		// Wrong relay key pinned.
		other := newPrivate(t)
		_, err := Dial(ctx, DialConfig{URL: r.url(tr), RelayKey: key.RelayPublicFromRaw(other.MachinePublic().Raw()), Machine: a.machine})
		if !errors.Is(err, noiseconn.ErrControllerKey) {
			t.Errorf("%s, wrong relay key: %v, want ErrControllerKey", tr, err)
		}
		// A machine the authorizer does not know: the client gets the
		// authorizer's reason.
		_, err = Dial(ctx, DialConfig{URL: r.url(tr), RelayKey: r.srv.Public(), Machine: newPrivate(t)})
		var refused *RefusedError
		var nrefused *noiseconn.RefusedError
		if !errors.As(err, &refused) || refused.Reason != "unknown machine" || !errors.As(err, &nrefused) ||
			!strings.Contains(err.Error(), "refused this machine") || !strings.Contains(err.Error(), "unknown machine") {
			t.Errorf("%s, unknown machine: %v, want a RefusedError saying \"unknown machine\"", tr, err)
		}
		// A node claiming to be a relay of the mesh.
		_, err = r.srv.dialAsMesh(ctx, r.url(tr), a.machine)
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), "mesh flag true, authorizer says false") {
			t.Errorf("%s, node as mesh peer: %v, want a RefusedError about the mesh flag", tr, err)
		}
	}
	if n := r.srv.metrics.refused.Load(); n != 4 {
		t.Errorf("%d refusals counted, want 4", n)
	}
	if got := r.srv.Clients()[TransportTCP]; got != 1 {
		t.Errorf("%d clients, want 1", got)
	}
}

// dialAsMesh dials url with the mesh flag as machine m.
func (s *Server) dialAsMesh(ctx context.Context, url string, m key.Private) (*Client, error) {
	conn, tr, err := dialNoise(ctx, DialConfig{URL: url, RelayKey: s.Public(), Machine: m}, []byte{helloMesh})
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, transport: tr, done: make(chan struct{})}, nil
}

func TestMalformedClosesOnlyThatConnection(t *testing.T) {
	for _, bad := range [][]byte{
		{byte(FrameSendPacket), 0, 0, 0, 3, 1, 2, 3},    // packet shorter than a key
		{byte(FrameSendPacket), 0, 0, 0, 9, 1},          // length says more than sent
		{byte(FrameRecvPacket), 0, 0, 0, 0},             // a relay → client type
		{byte(FrameMeshForward), 0, 0, 0, 1, 0},         // a mesh type from a node
		{0x7f, 0, 0, 0, 0},                              // unknown type
		{byte(FrameSendPacket), 0xff, 0xff, 0xff, 0xff}, // over MaxPayload
		bytes.Repeat([]byte{1}, MaxFrame+1),             // over noiseconn's message limit
	} {
		r := newTestRelay(t, nil)
		a, b := pair(t, r, TransportTCP)
		m := r.addNode(t, TransportWS, "t1", a.node)
		conn := m.c.conn
		if len(bad) > MaxFrame {
			// The client refuses to write it: dial with a larger limit.
			m.c.Close()
			mk, pub := m.machine.Raw(), m.machine.MachinePublic().Raw()
			cfg := noiseconn.DialConfig{URL: r.url(TransportTCP), ControllerKey: machineKeyOf(r.srv.Public()), MaxMessage: 1 << 20}
			cfg.Machine.Private, cfg.Machine.Public = mk[:], pub[:]
			var err error
			if conn, _, err = noiseconn.Dial(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			eventually(t, "the raw connection", func() bool {
				return r.srv.Clients()[TransportTCP] == 3 && r.srv.Clients()[TransportWS] == 0
			})
		}
		if err := conn.WriteMsg(bad); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the malformed connection to close", func() bool {
			return r.srv.Clients()[TransportWS] == 0 && r.srv.Clients()[TransportTCP] == 2
		})
		if d := r.srv.Drops()[dropMalformed]; d != 1 {
			t.Errorf("frame % x: %d malformed drops, want 1", bad[:min(len(bad), 8)], d)
		}
		a.c.Send(b.node, []byte("fine"))
		wantPacket(t, b.c, a.node, []byte("fine"))
	}
}

func TestQueueDropsOldest(t *testing.T) {
	r := newTestRelay(t, func(c *Config) { c.QueueLen = 4 })
	c := r.srv.newClient(nil, TransportTCP, Grant{Tenant: "t", Node: newPrivate(t).NodePublic(), Peers: PeerSet{}})
	// No connection, so no writer: the test takes the queue itself.
	c.ka.Stop()
	c.writing = true
	for i := range 10 {
		c.enqueue([]byte{byte(i)})
	}
	got := c.take(nil, false)
	if want := [][]byte{{6}, {7}, {8}, {9}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("queue holds %v, want %v", got, want)
	}
	if d := r.srv.Drops()[dropQueueFull]; d != 6 {
		t.Errorf("%d queue_full drops, want 6", d)
	}

	// End to end: b does not read while a sends more than its queue and socket
	// buffers hold; b then gets the newest packets, in order, and drops are counted.
	a, b := pair(t, r, TransportTCP)
	const n = 20000
	pkt := make([]byte, 1200)
	for i := range n {
		pkt[0], pkt[1] = byte(i>>8), byte(i)
		if err := a.c.Send(b.node, pkt); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "queue drops", func() bool { return r.srv.Drops()[dropQueueFull] > 6 })
	last := -1
	for {
		got := recvWithin(t, b.c, 10*time.Second)
		if got.err != nil {
			t.Fatal(got.err)
		}
		i := int(got.pkt[0])<<8 | int(got.pkt[1])
		if i <= last {
			t.Fatalf("packet %d after %d", i, last)
		}
		last = i
		if i == n-1 {
			break
		}
	}
}

func TestPeerGone(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		t.Run(tr, func(t *testing.T) {
			r := newTestRelay(t, nil)
			a, b := pair(t, r, tr)
			ac := r.registered("t1", a.node)
			// b comes and goes; every time, a hears of it.
			for i := range 3 {
				if i > 0 {
					b.c = r.dial(t, tr, b.machine)
					r.waitRegistered(t, "t1", b.node, nil)
				}
				a.c.Send(b.node, []byte("hi"))
				wantPacket(t, b.c, a.node, []byte("hi"))
				// a watches b from before the packet could reach b: had b gone in
				// between, a would never hear of it.
				r.srv.mu.RLock()
				_, watched := r.srv.watchers[peerID{"t1", b.node}][ac]
				r.srv.mu.RUnlock()
				if !watched {
					t.Fatal("b got a's packet before a watched b")
				}
				b.c.Close()
				got := recvWithin(t, a.c, 10*time.Second)
				var gone *PeerGoneError
				if !errors.As(got.err, &gone) || !gone.Peer.Equal(b.node) || gone.Reason != GoneDisconnected {
					t.Fatalf("got %+v, want peer-gone (disconnected) for b", got)
				}
				r.srv.mu.RLock()
				if len(r.srv.watchers) != 0 || len(ac.watching) != 0 {
					t.Errorf("watches left: %v, %v", r.srv.watchers, ac.watching)
				}
				r.srv.mu.RUnlock()
			}
		})
	}
}

func TestKeepAliveAndReadTimeout(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		t.Run(tr, func(t *testing.T) { testKeepAliveAndReadTimeout(t, tr) })
	}
}

func testKeepAliveAndReadTimeout(t *testing.T, tr string) {
	r := newTestRelay(t, func(c *Config) { c.KeepAlive = 20 * time.Millisecond })
	a := r.addNode(t, tr, "t1")
	// A client that sends nothing is closed after ReadTimeout; one that sends
	// keepalives is not.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet, err := Dial(ctx, DialConfig{URL: r.url(tr), RelayKey: r.srv.Public(), Machine: a.machine,
		KeepAlive: -1, ReadTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	// The quiet connection replaced a's; it reads keepalives, then gets closed.
	got := recvWithin(t, quiet, 10*time.Second)
	if got.err == nil {
		t.Fatalf("quiet client got %+v, want the relay to close it", got)
	}
	b := &node{machine: newPrivate(t), node: newPrivate(t).NodePublic()}
	r.grant(b, "t1")
	b.c, err = Dial(ctx, DialConfig{URL: r.url(tr), RelayKey: r.srv.Public(), Machine: b.machine, KeepAlive: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.c.Close()
	r.waitRegistered(t, "t1", b.node, nil)
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if r.srv.Clients()[tr] != 1 {
			t.Fatal("a client sending keepalives was closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebSocketLimits checks that the relay ends a WebSocket that sends a
// message over wsReadLimit, or a text message, before reading it whole.
func TestWebSocketLimits(t *testing.T) {
	r := newTestRelay(t, nil)
	for _, tt := range []struct {
		name string
		typ  websocket.MessageType
		msg  []byte
	}{
		// Without the limit, the relay would wait for the end of this header line.
		{"oversized", websocket.MessageBinary, append([]byte("POST /api/v1/control HTTP/1.1\r\nX: "), bytes.Repeat([]byte{'a'}, wsReadLimit)...)},
		{"text", websocket.MessageText, []byte("POST /api/v1/control HTTP/1.1\r\n\r\n")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			ws, _, err := websocket.Dial(ctx, r.url(TransportWS)+noiseconn.Path, &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			ws.Write(ctx, tt.typ, tt.msg)
			if _, _, err := ws.Read(ctx); err == nil || ctx.Err() != nil {
				t.Fatalf("read %v, want the relay to close the WebSocket", err)
			}
		})
	}
}
