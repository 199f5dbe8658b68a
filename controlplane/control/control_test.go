package control_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/controlclient"
	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/controltest"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/state"
)

// agent is an in-memory agent: the real control client with a handler that keeps
// the maps it gets and does what the real agent does on a rotation request.
type agent struct {
	t       *testing.T
	machine key.Private
	secret  string

	mu     sync.Mutex
	node   key.Private
	m      *netmap.Map
	hello  *controlpb.ServerHello
	client *controlclient.Client
	done   chan error
	cancel context.CancelFunc
}

func newAgent(t *testing.T, secret string) *agent {
	m, _ := key.NewPrivate()
	n, _ := key.NewPrivate()
	return &agent{t: t, machine: m, node: n, secret: secret}
}

func (a *agent) Hello() *controlpb.ClientHello {
	a.mu.Lock()
	defer a.mu.Unlock()
	raw := a.node.NodePublic().Raw()
	h := &controlpb.ClientHello{ProtocolVersion: controlclient.ProtocolVersion, Hostname: "test", NodeKey: raw[:]}
	if a.secret != "" && a.hello == nil {
		h.Enroll = &controlpb.Enroll{Secret: a.secret}
	}
	return h
}

func (a *agent) Connected(sh *controlpb.ServerHello) {
	a.mu.Lock()
	a.hello = sh
	a.mu.Unlock()
	a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_Endpoints{Endpoints: &controlpb.Endpoints{Endpoints: []string{"192.0.2.1:51820"}}}})
}

func (a *agent) Map(m *netmap.Map) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m = m
	if m.Self.RotateNodeKey && m.Self.NodeKey.Equal(a.node.NodePublic()) {
		a.node, _ = key.NewPrivate()
		raw := a.node.NodePublic().Raw()
		go a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_NodeKeyRotated{NodeKeyRotated: &controlpb.NodeKeyRotated{NodeKey: raw[:]}}})
	}
}

func (a *agent) Disconnected(error) {}

func (a *agent) start(c *controltest.Controller, controllerKey string) {
	ck, err := key.ParseMachinePublic(controllerKey)
	if err != nil {
		a.t.Fatal(err)
	}
	priv, pub := a.machine.Raw(), a.machine.MachinePublic().Raw()
	a.client = controlclient.New(controlclient.Config{
		URL: c.URL, ControllerKey: ck, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, KeepAlive: 200 * time.Millisecond,
		Machine: noiseDH(priv[:], pub[:]),
	}, a)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- a.client.Run(ctx) }()
	a.t.Cleanup(func() { a.stop() })
}

func (a *agent) stop() {
	a.cancel()
	<-a.done
	a.done <- nil // later stops return at once
}

func (a *agent) current() *netmap.Map {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func setup(t *testing.T) (*controltest.Controller, *state.Tenant, string) {
	t.Helper()
	c := controltest.StartWith(t, controltest.Options{KeepAlive: 200 * time.Millisecond})
	ctx := context.Background()
	tn, err := c.State.CreateTenant(ctx, "test", model.Tenant{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := c.State.CreateNetwork(ctx, "test", model.Network{TenantID: tn.ID, Name: "prod", IPv4: mustPrefix("100.64.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := c.State.CreateEnrollmentKey(ctx, "test", model.EnrollmentKey{TenantID: tn.ID, NetworkID: nw.ID, Reusable: true, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return c, c.State.World().Tenant(tn.ID), secret
}

func peerIDs(m *netmap.Map) string {
	if m == nil {
		return "<no map>"
	}
	var ids []string
	for _, p := range m.Peers {
		ids = append(ids, p.Name)
	}
	return strings.Join(ids, ",")
}

func TestEnrollMapsDeltasDelete(t *testing.T) {
	c, tn, secret := setup(t)
	a, b := newAgent(t, secret), newAgent(t, secret)
	a.start(c, c.NoisePublicKey)
	eventually(t, "a gets its map", func() string {
		if m := a.current(); m == nil || m.Self.Addresses[0].String() != "100.64.0.1/32" || len(m.Peers) != 0 {
			return "map " + peerIDs(m)
		}
		return ""
	})
	b.start(c, c.NoisePublicKey)
	eventually(t, "a and b see each other with endpoints", func() string {
		ma, mb := a.current(), b.current()
		if ma == nil || mb == nil || len(ma.Peers) != 1 || len(mb.Peers) != 1 {
			return "maps " + peerIDs(ma) + " / " + peerIDs(mb)
		}
		if len(ma.Peers[0].Endpoints) != 1 || ma.Peers[0].Endpoints[0].String() != "192.0.2.1:51820" {
			return "no endpoint for b in a's map"
		}
		if !ma.Peers[0].NodeKey.Equal(b.node.NodePublic()) || ma.Peers[0].AllowedIPs[0].String() != "100.64.0.2/32" {
			return "b's key or address wrong in a's map"
		}
		if mb.Self.Routes[0].String() != "100.64.0.0/24" || mb.Self.MTU != model.DefaultMTU {
			return "b's routes or MTU wrong"
		}
		return ""
	})

	// Rotation: b makes a new key; a switches to it and the old key is gone.
	old := b.node.NodePublic()
	if _, err := c.State.RequestKeyRotation(context.Background(), "test", tn.ID, b.hello.NodeId); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a has b's new key", func() string {
		ma := a.current()
		b.mu.Lock()
		nk := b.node.NodePublic()
		b.mu.Unlock()
		if nk.Equal(old) || !ma.Peers[0].NodeKey.Equal(nk) {
			return "a still has " + ma.Peers[0].NodeKey.String()
		}
		n := c.State.World().Tenant(tn.ID).Node(b.hello.NodeId)
		if !n.NodeKey.Equal(nk) || !n.RotateRequestedAt.IsZero() {
			return "controller state not updated"
		}
		return ""
	})

	// Delete b: a drops it, b is told and stops for good.
	if err := c.State.DeleteNode(context.Background(), "test", tn.ID, b.hello.NodeId); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a drops b", func() string {
		if m := a.current(); len(m.Peers) != 0 {
			return "a still has " + peerIDs(m)
		}
		return ""
	})
	select {
	case err := <-b.done:
		var ref *controlclient.RefusedError
		if !errors.As(err, &ref) || ref.Code != "node_deleted" || !ref.Permanent() {
			t.Fatalf("b's Run returned %v, want node_deleted", err)
		}
		b.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("b's client did not stop after its node was deleted")
	}
}

func TestRefusals(t *testing.T) {
	c, tn, _ := setup(t)
	ctx := context.Background()
	nw := tn.Networks.All()[0]
	_, expired, err := c.State.CreateEnrollmentKey(ctx, "test", model.EnrollmentKey{TenantID: tn.ID, NetworkID: nw.ID, ExpiresAt: time.Now().Add(time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "key expires", func() string {
		if time.Now().Before(c.State.World().Tenant(tn.ID).Keys.All()[1].ExpiresAt) && time.Now().Before(c.State.World().Tenant(tn.ID).Keys.All()[0].ExpiresAt) {
			return "not yet"
		}
		return ""
	})
	cases := []struct {
		name, secret, controllerKey string
		code, msg                   string
		sentinel                    error
	}{
		{name: "expired key", secret: expired, code: "enroll_refused", msg: "expired"},
		{name: "wrong secret", secret: "ek_nope.nope", code: "enroll_refused", msg: "unknown enrollment key"},
		{name: "unknown machine", code: "machine_unknown", msg: "not enrolled"},
		{name: "wrong controller key", secret: expired, controllerKey: func() string { p, _ := key.NewPrivate(); return p.MachinePublic().String() }(), sentinel: noiseconn.ErrControllerKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t, tc.secret)
			ck := c.NoisePublicKey
			if tc.controllerKey != "" {
				ck = tc.controllerKey
			}
			a.start(c, ck)
			var err error
			select {
			case err = <-a.done:
				a.done <- err
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not stop")
			}
			if tc.sentinel != nil {
				if !errors.Is(err, tc.sentinel) {
					t.Fatalf("err = %v, want %v", err, tc.sentinel)
				}
				return
			}
			var ref *controlclient.RefusedError
			if !errors.As(err, &ref) || ref.Code != tc.code || !strings.Contains(ref.Reason, tc.msg) {
				t.Fatalf("err = %v, want code %s with %q", err, tc.code, tc.msg)
			}
		})
	}
	if n := c.State.World().Tenant(tn.ID).Nodes.Len(); n != 0 {
		t.Fatalf("refused enrollments created %d nodes", n)
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func noiseDH(priv, pub []byte) noise.DHKey { return noise.DHKey{Private: priv, Public: pub} }

// TestPolicyDrivesPeersAndRules: each node gets only the peers its policy lets it
// talk to or hear from, and its own compiled rules; a new policy version reaches
// every agent, and a rejected one changes nothing.
func TestPolicyDrivesPeersAndRules(t *testing.T) {
	c, tn, _ := setup(t)
	ctx := context.Background()
	nw := tn.Networks.All()[0]
	agents := map[string]*agent{}
	for _, tag := range []string{"web", "db", "admin"} {
		_, secret, err := c.State.CreateEnrollmentKey(ctx, "test", model.EnrollmentKey{TenantID: tn.ID, NetworkID: nw.ID, Tags: []string{tag}, ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		a := newAgent(t, secret)
		a.start(c, c.NoisePublicKey)
		agents[tag] = a
	}
	eventually(t, "everyone sees everyone without a policy", func() string {
		for tag, a := range agents {
			if m := a.current(); m == nil || len(m.Peers) != 2 || m.Policy == nil {
				return tag + " has " + peerIDs(m)
			}
		}
		return ""
	})
	set := func(version int64, doc string) error {
		_, err := c.State.SetPolicy(ctx, "test", tn.ID, version, false, doc)
		return err
	}
	doc := `tags: [web, db, admin]
rules:
  - {name: admin-ssh, src: [tag:admin], dst: [tag:web], ports: [22], proto: tcp}
  - {name: web-db, src: [tag:web], dst: [tag:db], ports: [5432], proto: tcp}
`
	if err := set(0, doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"web": 2, "db": 1, "admin": 1}
	eventually(t, "peers follow the policy", func() string {
		for tag, a := range agents {
			m := a.current()
			if len(m.Peers) != want[tag] || m.Policy == nil || m.Policy.Version != 1 {
				return tag + " has peers " + peerIDs(m)
			}
		}
		return ""
	})
	db := agents["db"].current().Policy
	if len(db.Rules) == 0 || db.RuleNames[db.Rules[0].RuleID] != "web-db" {
		t.Fatalf("db's rules: %+v", db)
	}
	for _, r := range db.Rules {
		if db.RuleNames[r.RuleID] == "admin-ssh" {
			t.Fatalf("db got a rule it does not enforce: %+v", r)
		}
	}

	bad := `rules: [{src: [tag:nope], dst: ["*"]}]`
	if err := set(1, bad); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("a policy naming an unknown tag: %v", err)
	}
	if v := c.State.World().Tenant(tn.ID).Policy.Version; v != 1 {
		t.Fatalf("a rejected policy moved the version to %d", v)
	}

	if err := set(1, "tags: [web, db, admin]\nrules: [{name: admin-ssh, src: [tag:admin], dst: [tag:web], ports: [22], proto: tcp}]\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "web and db drop each other", func() string {
		if m := agents["db"].current(); len(m.Peers) != 0 || m.Policy.Version != 2 {
			return "db has " + peerIDs(m)
		}
		if m := agents["web"].current(); len(m.Peers) != 1 {
			return "web has " + peerIDs(m)
		}
		return ""
	})
}

// TestTenantIsolation: two tenants with the same overlay prefix and the same tags;
// no node of one ever receives a peer, an address or a rule of the other, under
// no policy, under a policy, and after changes.
func TestTenantIsolation(t *testing.T) {
	c := controltest.StartWith(t, controltest.Options{KeepAlive: 200 * time.Millisecond})
	ctx := context.Background()
	type tenant struct {
		id     string
		agents []*agent
	}
	var tenants []*tenant
	for _, name := range []string{"acme", "globex"} {
		tn, err := c.State.CreateTenant(ctx, "test", model.Tenant{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		nw, err := c.State.CreateNetwork(ctx, "test", model.Network{TenantID: tn.ID, Name: "prod", IPv4: mustPrefix("100.64.0.0/24")})
		if err != nil {
			t.Fatal(err)
		}
		_, secret, err := c.State.CreateEnrollmentKey(ctx, "test", model.EnrollmentKey{TenantID: tn.ID, NetworkID: nw.ID, Reusable: true, Tags: []string{"web"}, ExpiresAt: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		te := &tenant{id: tn.ID}
		for range 3 {
			a := newAgent(t, secret)
			a.start(c, c.NoisePublicKey)
			te.agents = append(te.agents, a)
		}
		tenants = append(tenants, te)
	}
	// foreign reports what in m belongs to the other tenant.
	foreign := func(m *netmap.Map, other *tenant) string {
		ot := c.State.World().Tenant(other.id)
		for _, n := range ot.Nodes.All() {
			if m.Peer(n.ID) != nil {
				return "peer " + n.ID
			}
			for _, p := range m.Peers {
				if p.NodeKey.Equal(n.NodeKey) {
					return "the node key of " + n.ID
				}
			}
		}
		if m.Self.TenantID != "" && m.Self.TenantID == other.id {
			return "the other tenant as its own"
		}
		return ""
	}
	check := func(what string, wantPeers int) {
		t.Helper()
		eventually(t, what, func() string {
			for i, te := range tenants {
				other := tenants[1-i]
				for _, a := range te.agents {
					m := a.current()
					if m == nil || len(m.Peers) != wantPeers {
						return "a node of tenant " + te.id + " has peers " + peerIDs(m)
					}
					if f := foreign(m, other); f != "" {
						return "a node of tenant " + te.id + " received " + f
					}
					for _, p := range m.Peers {
						if c.State.World().Tenant(te.id).Node(p.NodeID) == nil {
							return "peer " + p.NodeID + " is not of tenant " + te.id
						}
					}
					for _, name := range m.Policy.RuleNames {
						if name == "globex-only" && te.id == tenants[0].id {
							return "acme received globex's rule"
						}
					}
				}
			}
			return ""
		})
	}
	check("without policies", 2)
	doc := "tags: [web]\nrules:\n  - {name: globex-only, src: [tag:web], dst: [tag:web], ports: [443], proto: tcp}\n"
	if _, err := c.State.SetPolicy(ctx, "test", tenants[1].id, 0, false, doc); err != nil {
		t.Fatal(err)
	}
	check("with a policy in one tenant", 2)
	if err := c.State.DeleteNode(ctx, "test", tenants[1].id, tenants[1].agents[0].hello.NodeId); err != nil {
		t.Fatal(err)
	}
	eventually(t, "acme unaffected by globex's delete", func() string {
		for _, a := range tenants[0].agents {
			if m := a.current(); len(m.Peers) != 2 {
				return "acme node has " + peerIDs(m)
			}
		}
		for _, a := range tenants[1].agents[1:] {
			if m := a.current(); len(m.Peers) != 1 {
				return "globex node has " + peerIDs(m)
			}
		}
		return ""
	})
}

// TestPolicyTestsDoNotLockOut: a node change that makes one of the document's own
// tests fail does not stop the tenant's agents from connecting; the tests gate new
// documents, not node changes.
func TestPolicyTestsDoNotLockOut(t *testing.T) {
	c, tn, secret := setup(t)
	ctx := context.Background()
	a, b := newAgent(t, secret), newAgent(t, secret)
	a.start(c, c.NoisePublicKey)
	b.start(c, c.NoisePublicKey)
	eventually(t, "both connected", func() string {
		if a.current() == nil || b.current() == nil {
			return "not yet"
		}
		return ""
	})
	an, bn := a.hello.NodeName, b.hello.NodeName
	doc := "tags: [web, db]\nrules:\n  - {name: web-db, src: [tag:web], dst: [tag:db], ports: [5432], proto: tcp}\n" +
		"tests:\n  - {src: " + an + ", dst: " + bn + ", port: 5432, proto: tcp, expect: deny}\n"
	if _, err := c.State.SetPolicy(ctx, "test", tn.ID, 0, false, doc); err != nil {
		t.Fatal(err)
	}
	for id, tag := range map[string]string{a.hello.NodeId: "web", b.hello.NodeId: "db"} {
		if _, err := c.State.UpdateNode(ctx, "test", tn.ID, id, func(n *model.Node) error { n.Tags = []string{tag}; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	late := newAgent(t, secret)
	late.start(c, c.NoisePublicKey)
	eventually(t, "a new agent gets its map though a test of the document now fails", func() string {
		if late.current() == nil {
			return "no map"
		}
		if m := a.current(); m.Peer(b.hello.NodeId) == nil {
			return "a lost b, whom web-db now allows"
		}
		return ""
	})
}

// TestNetworkChangeReachesAgents: a new MTU for the network reaches its agents.
func TestNetworkChangeReachesAgents(t *testing.T) {
	c, tn, secret := setup(t)
	a := newAgent(t, secret)
	a.start(c, c.NoisePublicKey)
	eventually(t, "connected", func() string {
		if a.current() == nil {
			return "no map"
		}
		return ""
	})
	nw := tn.Networks.All()[0]
	if _, err := c.State.UpdateNetwork(context.Background(), "test", tn.ID, nw.ID, func(n *model.Network) error { n.MTU = 1380; return nil }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the agent gets the new MTU", func() string {
		if m := a.current(); m.Self.MTU != 1380 {
			return fmt.Sprintf("MTU %d", m.Self.MTU)
		}
		return ""
	})
}
