package control

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/controlplane/store"
	"github.com/cvlan/cvlan/controlplane/store/sqlstore"
)

// benchTenant is a tenant with a network "big" of n nodes and a network "small" of
// 10, loaded the way the controller loads at start.
func benchTenant(b *testing.B, n int) (*state.World, *state.Tenant, []*model.Node, []*model.Node) {
	b.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Config{Driver: "sqlite", DSN: filepath.Join(b.TempDir(), "bench.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	tn := &model.Tenant{ID: model.NewID(model.PrefixTenant), Name: "bench", CreatedAt: now}
	big := &model.Network{ID: model.NewID(model.PrefixNetwork), TenantID: tn.ID, Name: "big", IPv4: netip.MustParsePrefix("100.64.0.0/10"), MTU: 1420, CreatedAt: now}
	small := &model.Network{ID: model.NewID(model.PrefixNetwork), TenantID: tn.ID, Name: "small", IPv4: netip.MustParsePrefix("10.9.0.0/24"), MTU: 1420, CreatedAt: now}
	mk := func(nw *model.Network, i int) *model.Node {
		p, _ := key.NewPrivate()
		m, _ := key.NewPrivate()
		a := nw.IPv4.Addr()
		for range i + 1 {
			a = a.Next()
		}
		return &model.Node{
			ID: model.NewID(model.PrefixNode), TenantID: tn.ID, NetworkID: nw.ID, Name: fmt.Sprintf("%s-%d", nw.Name, i),
			Kind: model.KindAgent, Tags: []string{}, Routes: []netip.Prefix{}, MachineKey: m.MachinePublic(), NodeKey: p.NodePublic(),
			IPv4: a, Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 51820)}, CreatedAt: now,
		}
	}
	var bigNodes, smallNodes []*model.Node
	for i := range n {
		bigNodes = append(bigNodes, mk(big, i))
	}
	for i := range 10 {
		smallNodes = append(smallNodes, mk(small, i))
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		if err := tx.Tenants().Insert(ctx, tn); err != nil {
			return err
		}
		for _, nw := range []*model.Network{big, small} {
			if err := tx.Networks().Insert(ctx, nw); err != nil {
				return err
			}
		}
		for _, nd := range append(bigNodes, smallNodes...) {
			if err := tx.Nodes().Insert(ctx, nd); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	s, err := state.Open(ctx, st, state.Options{})
	if err != nil {
		b.Fatal(err)
	}
	w := s.World()
	return w, w.Tenant(tn.ID), bigNodes, smallNodes
}

// BenchmarkFullMap is the map a node gets when it connects: linear in the nodes
// of its network.
func BenchmarkFullMap(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		w, t, big, _ := benchTenant(b, n)
		h := newHub(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m, _, err := h.start(w, t, big[0], newOutbox(big[0]))
				if err != nil || len(m.Peers) != n-1 {
					b.Fatalf("%d peers, %v", len(m.Peers), err)
				}
			}
		})
	}
}

// BenchmarkFanout is the work of one node's change with every node connected:
// one outbox update per node that sees the changed node (touched/op), so a change
// in the big network costs O(n) and a change in the 10-node network costs the
// same at 1k and 10k nodes. Nothing is recomputed per pair.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		w, t, big, small := benchTenant(b, n)
		h := newHub(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if _, err := h.policy(t, ""); err != nil {
			b.Fatal(err)
		}
		for _, nd := range append(big, small...) {
			h.add(newOutbox(nd))
		}
		for _, tc := range []struct {
			name string
			node *model.Node
		}{{"change-in-big-network", big[0]}, {"change-in-10-node-network", small[0]}} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, tc.name), func(b *testing.B) {
				b.ReportAllocs()
				old := tc.node
				touched := 0
				i := 0
				for b.Loop() {
					nw := *old
					i++
					nw.Endpoints = []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 51820)}
					touched += h.apply(w, state.Changes{Nodes: []state.NodeChange{{Old: old, New: &nw}}})
					old = &nw
				}
				b.ReportMetric(float64(touched)/float64(b.N), "touched/op")
			})
		}
	}
}
