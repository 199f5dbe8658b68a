package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/relaymap"
	"github.com/cvlan/cvlan/datapath/relay"
	"github.com/cvlan/cvlan/datapath/relay/framed"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// meshRelay is a framed relay on loopback driven by a link, as the daemon does.
type meshRelay struct {
	ln  *link
	fs  *framed.Server
	url string
	key key.Private
}

func newMeshRelay(t *testing.T, ctx context.Context, id string) *meshRelay {
	k, _ := key.NewPrivate()
	rl, err := relay.New(relay.Options{XDP: xdprelay.ModeOff, Addr: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rl.Close() })
	r := &meshRelay{ln: &link{log: slog.New(slog.DiscardHandler), rl: rl}, key: k}
	fs, err := framed.NewServer(framed.Config{Key: k, Authorizer: r.ln})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(noiseconn.Path, fs)
	hs := httptest.NewUnstartedServer(mux)
	hs.StartTLS()
	t.Cleanup(func() { fs.Close(); hs.Close() })
	r.fs, r.url = fs, hs.URL
	r.ln.fs, r.ln.ctx = fs, ctx
	r.ln.Connected(&controlpb.ServerHello{RelayId: id})
	return r
}

// apply is link.Relay without the UDP relay.
func (r *meshRelay) apply(cfg *relaymap.Config) {
	r.ln.cur.Store(newIndex(cfg))
	r.ln.setMesh(cfg)
}

// TestMeshLinks: two relays of a region link (the lower ID dials), and a framed
// packet from a node on one reaches its paired node on the other.
func TestMeshLinks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1, r2 := newMeshRelay(t, ctx, "rl_1"), newMeshRelay(t, ctx, "rl_2")
	ma, mb := mustKey(t), mustKey(t)
	na, nb := mustKey(t).NodePublic(), mustKey(t).NodePublic()
	base := relaymap.Config{
		Clients: map[string]relaymap.Client{
			"nd_a": {NodeID: "nd_a", TenantID: "tn_1", Machine: ma.MachinePublic(), Node: na},
			"nd_b": {NodeID: "nd_b", TenantID: "tn_1", Machine: mb.MachinePublic(), Node: nb},
		},
		Pairs: map[relaymap.Pair]struct{}{{TenantID: "tn_1", A: "nd_a", B: "nd_b"}: {}},
	}
	c1, c2 := base, base
	c1.Mesh = []netmap.Relay{{ID: "rl_2", TLSURL: r2.url, Key: r2.key.RelayPublic()}}
	c2.Mesh = []netmap.Relay{{ID: "rl_1", TLSURL: r1.url, Key: r1.key.RelayPublic()}}
	r2.apply(&c2)
	r1.apply(&c1)
	if len(r2.ln.meshes) != 0 || len(r1.ln.meshes) != 1 {
		t.Fatalf("r1 dials %d links, r2 %d; want 1 and 0", len(r1.ln.meshes), len(r2.ln.meshes))
	}
	a, err := framed.Dial(ctx, framed.DialConfig{URL: r1.url, RelayKey: r1.key.RelayPublic(), Machine: ma})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := framed.Dial(ctx, framed.DialConfig{URL: r2.url, RelayKey: r2.key.RelayPublic(), Machine: mb})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan string, 1)
	go func() {
		for {
			src, pkt, err := b.Recv()
			if err != nil {
				return
			}
			if src.Equal(na) {
				got <- string(pkt)
				return
			}
		}
	}()
	// Until the link is up and b's presence crossed it, a gets peer-gone; keep
	// sending until one arrives.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := a.Send(nb, []byte("across the mesh")); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if p != "across the mesh" {
				t.Fatalf("b got %q", p)
			}
			if r1.fs.MeshForwards() == 0 {
				t.Fatal("delivered without a mesh forward")
			}
			// Dropping the peer from the mesh list closes the link.
			c1.Mesh = nil
			r1.apply(&c1)
			if len(r1.ln.meshes) != 0 {
				t.Fatal("the link stayed after its relay left the mesh list")
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no packet across the mesh")
		}
	}
}

func mustKey(t *testing.T) key.Private {
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRekeyedNodeDisconnected: a node whose node key changes (or that is deleted)
// loses its framed connection, which was addressed by the old key.
func TestRekeyedNodeDisconnected(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newMeshRelay(t, ctx, "rl_1")
	ma := mustKey(t)
	cfg := &relaymap.Config{Clients: map[string]relaymap.Client{
		"nd_a": {NodeID: "nd_a", TenantID: "tn_1", Machine: ma.MachinePublic(), Node: mustKey(t).NodePublic()},
	}}
	r.ln.cur.Store(newIndex(cfg))
	a, err := framed.Dial(ctx, framed.DialConfig{URL: r.url, RelayKey: r.key.RelayPublic(), Machine: ma})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	gone := make(chan error, 1)
	go func() {
		for {
			if _, _, err := a.Recv(); err != nil {
				var pg *framed.PeerGoneError
				if !errors.As(err, &pg) {
					gone <- err
					return
				}
			}
		}
	}()
	// Unchanged clients keep their connection...
	same := &relaymap.Config{Seq: 1, Clients: cfg.Clients}
	r.ln.Relay(same)
	select {
	case err := <-gone:
		t.Fatalf("an unchanged client was disconnected: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// ...a new node key ends it.
	rekeyed := &relaymap.Config{Seq: 2, Clients: map[string]relaymap.Client{
		"nd_a": {NodeID: "nd_a", TenantID: "tn_1", Machine: ma.MachinePublic(), Node: mustKey(t).NodePublic()},
	}}
	r.ln.Relay(rekeyed)
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the rekeyed node's connection stayed up")
	}
}
