package framed

import (
	"context"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
)

// link links from to to over transport.
func link(t *testing.T, from, to *testRelay, transport string) {
	t.Helper()
	to.auth.set(from.srv.cfg.Key.MachinePublic(), Grant{Mesh: true})
	// Mesh's ctx bounds the link's life, not only the dial.
	done, err := from.srv.Mesh(context.Background(), DialConfig{URL: to.url(transport), RelayKey: to.srv.Public()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		from.srv.Close()
		<-done
	})
}

func (r *testRelay) knowsRemote(tenant string, n key.NodePublic) bool {
	r.srv.mu.RLock()
	defer r.srv.mu.RUnlock()
	return r.srv.remote[peerID{tenant, n}] != nil
}

func TestMesh(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		t.Run(tr, func(t *testing.T) {
			r1, r2, r3 := newTestRelay(t, nil), newTestRelay(t, nil), newTestRelay(t, nil)
			a := r1.addNode(t, tr, "t1")
			b := r2.addNode(t, tr, "t1", a.node)
			c := r3.addNode(t, tr, "t1")
			r1.grant(a, "t1", b.node, c.node)
			old := r1.registered("t1", a.node)
			a.c.Close()
			a.c = r1.dial(t, tr, a.machine)
			r1.waitRegistered(t, "t1", a.node, old)

			// r1 — r2 — r3: r2 learns of c from r3, r1 only of r2's own clients.
			link(t, r1, r2, tr)
			link(t, r3, r2, tr)
			eventually(t, "presence over the links", func() bool {
				return r1.knowsRemote("t1", b.node) && r2.knowsRemote("t1", a.node) &&
					r2.knowsRemote("t1", c.node) && r3.knowsRemote("t1", b.node)
			})
			if r1.knowsRemote("t1", c.node) {
				t.Fatal("r1 learned of a node two hops away")
			}

			a.c.Send(b.node, []byte("over the mesh"))
			wantPacket(t, b.c, a.node, []byte("over the mesh"))
			b.c.Send(a.node, []byte("and back"))
			wantPacket(t, a.c, b.node, []byte("and back"))
			// The forwarding relay counts after it sends, so the packet can arrive first.
			eventually(t, "one mesh forward each way", func() bool {
				return r1.srv.MeshForwards() >= 1 && r2.srv.MeshForwards() >= 1
			})
			if r1.srv.MeshForwards() != 1 || r2.srv.MeshForwards() != 1 {
				t.Errorf("mesh forwards %d and %d, want 1 and 1", r1.srv.MeshForwards(), r2.srv.MeshForwards())
			}

			// A mesh-forward for a node r2 knows only through r3 is dropped, not
			// forwarded a second time.
			r1.srv.mu.RLock()
			l := r1.srv.remote[peerID{"t1", b.node}]
			r1.srv.mu.RUnlock()
			l.enqueue(MeshForwardFrame("t1", a.node, c.node, []byte("two hops")))
			eventually(t, "r2 to drop the second hop", func() bool { return r2.srv.Drops()[dropUnknownPeer] == 1 })
			if r2.srv.MeshForwards() != 1 {
				t.Errorf("r2 forwarded a forwarded packet")
			}
			// Tenants stay apart over the mesh: a forward naming another tenant finds
			// nobody.
			l.enqueue(MeshForwardFrame("t2", a.node, b.node, []byte("other tenant")))
			eventually(t, "r2 to drop the other tenant's forward", func() bool { return r2.srv.Drops()[dropUnknownPeer] == 2 })

			// b leaves r2: a gets peer-gone through the mesh.
			b.c.Close()
			got := recvWithin(t, a.c, 10*time.Second)
			var gone *PeerGoneError
			if !asPeerGone(got.err, &gone) || !gone.Peer.Equal(b.node) || gone.Reason != GoneDisconnected {
				t.Fatalf("got %+v, want peer-gone for b", got)
			}
		})
	}
}

func asPeerGone(err error, p **PeerGoneError) bool {
	g, ok := err.(*PeerGoneError)
	*p = g
	return ok
}
