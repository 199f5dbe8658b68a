package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/relaymap"
)

// TestAuthorize: the framed relay serves the machines the controller named, and
// each reaches only the nodes of its tenant it is paired with, as pairs change.
func TestAuthorize(t *testing.T) {
	mk := func() key.Private {
		k, _ := key.NewPrivate()
		return k
	}
	ma, mb, mc, mg := mk(), mk(), mk(), mk()
	na, nb, nc, ng := mk().NodePublic(), mk().NodePublic(), mk().NodePublic(), mk().NodePublic()
	cfg := &relaymap.Config{
		Clients: map[string]relaymap.Client{
			"nd_a": {NodeID: "nd_a", TenantID: "tn_1", Machine: ma.MachinePublic(), Node: na},
			"nd_b": {NodeID: "nd_b", TenantID: "tn_1", Machine: mb.MachinePublic(), Node: nb},
			"nd_c": {NodeID: "nd_c", TenantID: "tn_1", Machine: mc.MachinePublic(), Node: nc},
			// Another tenant's node with the same node key as b must not be b.
			"nd_g": {NodeID: "nd_g", TenantID: "tn_2", Machine: mg.MachinePublic(), Node: ng},
		},
		Pairs: map[relaymap.Pair]struct{}{{TenantID: "tn_1", A: "nd_a", B: "nd_b"}: {}},
	}
	l := &link{}
	if _, err := l.Authorize(ma.MachinePublic()); !errors.Is(err, ErrNoController) {
		t.Fatalf("before any configuration: %v, want ErrNoController", err)
	}
	l.cur.Store(newIndex(cfg))
	g, err := l.Authorize(ma.MachinePublic())
	if err != nil || g.Tenant != "tn_1" || !g.Node.Equal(na) {
		t.Fatalf("a: %+v, %v", g, err)
	}
	if !g.Peers.Allowed(nb) || g.Peers.Allowed(nc) || g.Peers.Allowed(ng) || g.Peers.Allowed(na) {
		t.Fatal("a's peers are not exactly b")
	}
	stranger, _ := key.NewPrivate()
	if _, err := l.Authorize(stranger.MachinePublic()); err == nil || !strings.Contains(err.Error(), "does not know it") {
		t.Fatalf("unknown machine: %v", err)
	}
	gg, err := l.Authorize(mg.MachinePublic())
	if err != nil || gg.Peers.Allowed(na) || gg.Peers.Allowed(nb) {
		t.Fatalf("the other tenant's node reaches tenant 1: %+v %v", gg, err)
	}
	// A new pair applies to a connected client's grant at once; a removed one too.
	next := &relaymap.Config{Clients: cfg.Clients, Pairs: map[relaymap.Pair]struct{}{{TenantID: "tn_1", A: "nd_a", B: "nd_c"}: {}}}
	l.cur.Store(newIndex(next))
	if g.Peers.Allowed(nb) || !g.Peers.Allowed(nc) {
		t.Fatal("a's grant did not follow the new pairs")
	}
}
