package control_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/controlclient"
	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/controltest"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/controlplane/relaymap"
)

// fakeRelay is a relay's control connection that keeps the configuration it gets.
type fakeRelay struct {
	t      *testing.T
	key    key.Private
	mu     sync.Mutex
	cfg    *relaymap.Config
	done   chan error
	cancel context.CancelFunc
}

func (r *fakeRelay) Hello() *controlpb.ClientHello {
	return &controlpb.ClientHello{ProtocolVersion: controlclient.ProtocolVersion, Relay: true}
}
func (r *fakeRelay) Connected(*controlpb.ServerHello) {}
func (r *fakeRelay) Map(*netmap.Map)                  { r.t.Error("a relay got a network map") }
func (r *fakeRelay) Disconnected(error)               {}
func (r *fakeRelay) Relay(c *relaymap.Config) {
	r.mu.Lock()
	r.cfg = c
	r.mu.Unlock()
}

func (r *fakeRelay) current() *relaymap.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

func startRelay(t *testing.T, c *controltest.Controller, k key.Private) *fakeRelay {
	ck, err := key.ParseMachinePublic(c.NoisePublicKey)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRelay{t: t, key: k, done: make(chan error, 1)}
	priv, pub := k.Raw(), k.MachinePublic().Raw()
	cl := controlclient.New(controlclient.Config{
		URL: c.URL, ControllerKey: ck, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		KeepAlive: 200 * time.Millisecond, Machine: noiseDH(priv[:], pub[:]),
	}, r)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- cl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("relay client did not stop")
		}
	})
	return r
}

func report(a *agent, peer string, failed uint32) {
	a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_PathReport{PathReport: &controlpb.PathReport{PeerNodeId: peer, Failed: failed}}})
}

func relayOf(m *netmap.Map, peer string) *netmap.RelayPath {
	if m == nil {
		return nil
	}
	if p := m.Peer(peer); p != nil {
		return p.Relay
	}
	return nil
}

func TestRelayPaths(t *testing.T) {
	c, tn, secret := setup(t)
	ctx := context.Background()
	rk, _ := key.NewPrivate()
	rel, err := c.State.CreateRelay(ctx, "test", model.Relay{
		Name: "fra1", Region: "eu", PublicAddr: netip.MustParseAddr("192.0.2.50"), UDPPortMin: 40000, UDPPortMax: 40001,
		TLSURL: "https://192.0.2.50", RelayKey: rk.RelayPublic(),
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b := newAgent(t, secret), newAgent(t, secret)
	a.start(c, c.NoisePublicKey)
	b.start(c, c.NoisePublicKey)
	eventually(t, "a and b peer, with the relay map", func() string {
		ma, mb := a.current(), b.current()
		if ma == nil || mb == nil || len(ma.Peers) != 1 || len(mb.Peers) != 1 {
			return "maps " + peerIDs(ma) + " / " + peerIDs(mb)
		}
		if len(ma.Relays) != 1 || ma.Relays[0].Name != "fra1" || !ma.Relays[0].Key.Equal(rk.RelayPublic()) || ma.Relays[0].Addr.String() != "192.0.2.50" {
			return fmt.Sprintf("relay map %+v", ma.Relays)
		}
		return ""
	})
	aID, bID := a.hello.NodeId, b.hello.NodeId

	// No relay connected: a report changes nothing. The controller handles a's
	// messages in order, so once b sees a's new endpoint the report was handled.
	report(a, bID, 0)
	a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_Endpoints{Endpoints: &controlpb.Endpoints{Endpoints: []string{"192.0.2.9:51820"}}}})
	eventually(t, "b sees a's new endpoint", func() string {
		if p := b.current().Peer(aID); p == nil || len(p.Endpoints) != 1 || p.Endpoints[0].String() != "192.0.2.9:51820" {
			return fmt.Sprintf("%+v", p)
		}
		return ""
	})
	if p := relayOf(a.current(), bID); p != nil {
		t.Fatalf("a report without a connected relay gave a path %+v", p)
	}
	r := startRelay(t, c, rk)
	eventually(t, "the relay gets every node as a client", func() string {
		cfg := r.current()
		if cfg == nil || len(cfg.Clients) != 2 || len(cfg.Sessions) != 0 || len(cfg.Pairs) != 0 {
			return fmt.Sprintf("config %+v", cfg)
		}
		cl := cfg.Clients[aID]
		if cl.TenantID != tn.ID || !cl.Machine.Equal(a.machine.MachinePublic()) || !cl.Node.Equal(a.node.NodePublic()) {
			return fmt.Sprintf("client a %+v", cl)
		}
		return ""
	})

	// Direct failed: a UDP session, one side each, the same on the relay.
	report(a, bID, 0)
	var sess relaymap.Session
	eventually(t, "a UDP session for the pair", func() string {
		pa, pb, cfg := relayOf(a.current(), bID), relayOf(b.current(), aID), r.current()
		if pa == nil || pb == nil || pa.Mode != netmap.PathUDP || pb.Mode != netmap.PathUDP || len(cfg.Sessions) != 1 {
			return fmt.Sprintf("paths %+v / %+v, sessions %d", pa, pb, len(cfg.Sessions))
		}
		for _, s := range cfg.Sessions {
			sess = s
		}
		side := map[string]uint8{min(aID, bID): 0, max(aID, bID): 1}
		for _, x := range []struct {
			p  *netmap.RelayPath
			id string
		}{{pa, aID}, {pb, bID}} {
			s := side[x.id]
			if x.p.RelayID != rel.ID || x.p.Session != sess.ID || x.p.Side != s || x.p.Port != sess.Ports[s] || x.p.Token != sess.Tokens[s] {
				return fmt.Sprintf("node %s has %+v, relay has %+v", x.id, x.p, sess)
			}
		}
		return ""
	})

	// A stale report (direct again) changes nothing; UDP failed: framed.
	report(b, aID, 0)
	report(b, aID, 1)
	eventually(t, "the pair moves to the framed relay", func() string {
		pa, pb, cfg := relayOf(a.current(), bID), relayOf(b.current(), aID), r.current()
		if pa == nil || pb == nil || pa.Mode != netmap.PathFramed || pb.Mode != netmap.PathFramed {
			return fmt.Sprintf("paths %+v / %+v", pa, pb)
		}
		if len(cfg.Sessions) != 0 || !cfg.Allowed(tn.ID, aID, bID) || len(cfg.Pairs) != 1 {
			return fmt.Sprintf("relay sessions %d, pairs %v", len(cfg.Sessions), cfg.Pairs)
		}
		return ""
	})
	report(a, bID, 2) // nothing after framed
	report(a, "no_such_node", 0)

	// A relay key that is not registered is refused.
	other, _ := key.NewPrivate()
	stranger := startRelay(t, c, other)
	select {
	case err := <-stranger.done:
		var ref *controlclient.RefusedError
		if !errors.As(err, &ref) || ref.Code != "relay_unknown" {
			t.Fatalf("unregistered relay: %v, want relay_unknown", err)
		}
		stranger.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("an unregistered relay was not refused")
	}

	// Deleting b drops the pair and the client on the relay.
	if err := c.State.DeleteNode(ctx, "test", tn.ID, bID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relay forgets b", func() string {
		cfg := r.current()
		if len(cfg.Pairs) != 0 || len(cfg.Clients) != 1 {
			return fmt.Sprintf("pairs %v, clients %d", cfg.Pairs, len(cfg.Clients))
		}
		return ""
	})

	// Deleting the relay: agents get an empty relay map, the relay a goodbye.
	if err := c.State.DeleteRelay(ctx, "test", rel.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's relay map empties", func() string {
		if m := a.current(); len(m.Relays) != 0 {
			return fmt.Sprintf("relays %+v", m.Relays)
		}
		return ""
	})
	select {
	case err := <-r.done:
		var ref *controlclient.RefusedError
		if !errors.As(err, &ref) || ref.Code != "relay_unknown" {
			t.Fatalf("deleted relay: %v, want relay_unknown", err)
		}
		r.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("a deleted relay was not told goodbye")
	}
}

// TestRelayPortsRunOut: a relay whose port range is used up puts the next pair on
// its framed relay; a path report about another tenant's node does nothing.
func TestRelayPortsRunOut(t *testing.T) {
	c, tn, secret := setup(t)
	ctx := context.Background()
	rk, _ := key.NewPrivate()
	if _, err := c.State.CreateRelay(ctx, "test", model.Relay{
		Name: "fra1", Region: "eu", PublicAddr: netip.MustParseAddr("192.0.2.50"), UDPPortMin: 40000, UDPPortMax: 40001,
		WSURL: "wss://192.0.2.50", RelayKey: rk.RelayPublic(),
	}); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, c, rk)
	ag := []*agent{newAgent(t, secret), newAgent(t, secret), newAgent(t, secret)}
	for _, x := range ag {
		x.start(c, c.NoisePublicKey)
	}
	eventually(t, "three peers each", func() string {
		for _, x := range ag {
			if m := x.current(); m == nil || len(m.Peers) != 2 {
				return "maps " + peerIDs(m)
			}
		}
		if cfg := r.current(); cfg == nil || len(cfg.Clients) != 3 {
			return "relay clients"
		}
		return ""
	})
	id := func(i int) string { return ag[i].hello.NodeId }
	report(ag[0], id(1), 0)
	eventually(t, "first pair on UDP", func() string {
		if p := relayOf(ag[1].current(), id(0)); p == nil || p.Mode != netmap.PathUDP {
			return fmt.Sprintf("%+v", p)
		}
		return ""
	})
	report(ag[0], id(2), 0)
	eventually(t, "second pair framed: no ports left", func() string {
		if p := relayOf(ag[2].current(), id(0)); p == nil || p.Mode != netmap.PathFramed {
			return fmt.Sprintf("%+v", p)
		}
		return ""
	})

	// Another tenant's node is never a pair.
	nt, err := c.State.CreateTenant(ctx, "test", model.Tenant{Name: "globex"})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := c.State.CreateNetwork(ctx, "test", model.Network{TenantID: nt.ID, Name: "prod", IPv4: mustPrefix("100.64.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	_, s2, err := c.State.CreateEnrollmentKey(ctx, "test", model.EnrollmentKey{TenantID: nt.ID, NetworkID: nw.ID, Reusable: true, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	g := newAgent(t, s2)
	g.start(c, c.NoisePublicKey)
	eventually(t, "the relay has the other tenant's node", func() string {
		if cfg := r.current(); len(cfg.Clients) != 4 || g.current() == nil {
			return fmt.Sprintf("%d clients", len(cfg.Clients))
		}
		return ""
	})
	report(g, id(1), 0)
	report(ag[1], g.hello.NodeId, 0)
	report(ag[1], id(2), 0) // a marker: once this lands, the reports before it did
	eventually(t, "the marker pair is framed", func() string {
		if p := relayOf(ag[2].current(), id(1)); p == nil || p.Mode != netmap.PathFramed {
			return fmt.Sprintf("%+v", p)
		}
		return ""
	})
	if cfg := r.current(); len(cfg.Pairs) != 2 {
		t.Fatalf("pairs %v, want the two of tenant %s only", cfg.Pairs, tn.ID)
	}
	for p := range r.current().Pairs {
		if p.TenantID != tn.ID {
			t.Fatalf("cross-tenant pair %+v", p)
		}
	}
	if m := g.current(); len(m.Peers) != 0 {
		t.Fatalf("the other tenant's node has peers %s", peerIDs(m))
	}
}

// TestRelayMesh: relays learn the other relays of their region, and a framed pair
// reaches every relay of the chosen relay's region, and no other.
func TestRelayMesh(t *testing.T) {
	c, tn, secret := setup(t)
	ctx := context.Background()
	keys := map[string]key.Private{}
	ids := map[string]string{}
	for _, x := range []struct{ name, region string }{{"fra1", "eu"}, {"fra2", "eu"}, {"nyc1", "us"}} {
		k, _ := key.NewPrivate()
		keys[x.name] = k
		r, err := c.State.CreateRelay(ctx, "test", model.Relay{
			Name: x.name, Region: x.region, PublicAddr: netip.MustParseAddr("192.0.2.50"), UDPPortMin: 40000, UDPPortMax: 40000,
			WSURL: "wss://" + x.name + ".example", RelayKey: k.RelayPublic(),
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[x.name] = r.ID
	}
	rs := map[string]*fakeRelay{}
	for name, k := range keys {
		rs[name] = startRelay(t, c, k)
	}
	meshNames := func(r *fakeRelay) string {
		cfg := r.current()
		if cfg == nil {
			return "<none>"
		}
		var names []string
		for _, m := range cfg.Mesh {
			names = append(names, m.Name)
		}
		return fmt.Sprint(names)
	}
	eventually(t, "each relay has its region's others", func() string {
		if a, b, u := meshNames(rs["fra1"]), meshNames(rs["fra2"]), meshNames(rs["nyc1"]); a != "[fra2]" || b != "[fra1]" || u != "[]" {
			return fmt.Sprintf("fra1 %s, fra2 %s, nyc1 %s", a, b, u)
		}
		return ""
	})
	a, b := newAgent(t, secret), newAgent(t, secret)
	a.start(c, c.NoisePublicKey)
	b.start(c, c.NoisePublicKey)
	eventually(t, "peers", func() string {
		if ma, mb := a.current(), b.current(); ma == nil || mb == nil || len(ma.Peers) != 1 || len(mb.Peers) != 1 {
			return "maps " + peerIDs(ma) + " / " + peerIDs(mb)
		}
		return ""
	})
	aID, bID := a.hello.NodeId, b.hello.NodeId
	// fra1 is first by name; its one-port range cannot hold a session, nor can the
	// others': the pair goes straight to fra1's framed relay.
	report(a, bID, 0)
	eventually(t, "the framed pair on both eu relays", func() string {
		p := relayOf(a.current(), bID)
		if p == nil || p.Mode != netmap.PathFramed || p.RelayID != ids["fra1"] {
			return fmt.Sprintf("path %+v", p)
		}
		if !rs["fra1"].current().Allowed(tn.ID, aID, bID) || !rs["fra2"].current().Allowed(tn.ID, aID, bID) {
			return "not on both eu relays"
		}
		return ""
	})
	if len(rs["nyc1"].current().Pairs) != 0 {
		t.Fatal("the us relay got an eu pair")
	}
	// A relay that moves to another region reconnects with the new mesh.
	if _, err := c.State.UpdateRelay(ctx, "test", ids["fra2"], func(r *model.Relay) error { r.Region = "us"; return nil }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "meshes follow the move", func() string {
		if a, b, u := meshNames(rs["fra1"]), meshNames(rs["fra2"]), meshNames(rs["nyc1"]); a != "[]" || b != "[nyc1]" || u != "[fra2]" {
			return fmt.Sprintf("fra1 %s, fra2 %s, nyc1 %s", a, b, u)
		}
		if len(rs["fra2"].current().Pairs) != 0 {
			return "fra2 still has the eu pair"
		}
		return ""
	})
}
