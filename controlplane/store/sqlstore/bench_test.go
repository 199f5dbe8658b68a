package sqlstore

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

const (
	benchNodes = 10_000
	benchBatch = 500 // nodes per Update
	benchPage  = 1000
)

// benchTenant stores a tenant with one network big enough for benchNodes.
func benchTenant(b *testing.B, s *Store, name string) (model.Tenant, model.Network) {
	ctx := context.Background()
	tn := model.Tenant{ID: model.NewID(model.PrefixTenant), Name: name, CreatedAt: time.Now()}
	nw := model.Network{ID: model.NewID(model.PrefixNetwork), TenantID: tn.ID, Name: "n",
		IPv4: netip.MustParsePrefix("100.64.0.0/18"), MTU: model.DefaultMTU, CreatedAt: time.Now()}
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Tenants().Insert(ctx, &tn); err != nil {
			return err
		}
		return tx.Networks().Insert(ctx, &nw)
	}); err != nil {
		b.Fatal(err)
	}
	return tn, nw
}

// insertNodes stores benchNodes realistic nodes in nw, benchBatch per Update.
// seq makes machine keys unique across calls.
func insertNodes(b *testing.B, s *Store, nw model.Network, seq int) {
	ctx := context.Background()
	now := time.Now()
	addr := nw.IPv4.Addr()
	for start := 0; start < benchNodes; start += benchBatch {
		err := s.Update(ctx, func(tx store.Tx) error {
			for i := start; i < start+benchBatch; i++ {
				addr = addr.Next()
				var mk [key.Len]byte
				mk[0], mk[1], mk[2], mk[3], mk[31] = byte(seq), byte(seq>>8), byte(i), byte(i>>8), 1
				n := model.Node{
					ID: model.NewID(model.PrefixNode), TenantID: nw.TenantID, NetworkID: nw.ID,
					Name: fmt.Sprintf("node-%05d", i), Kind: model.KindAgent, Tags: []string{"bench"},
					MachineKey: key.MachinePublicFromRaw(mk), NodeKey: key.NodePublicFromRaw(mk), IPv4: addr,
					Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641")},
					Routes:    []netip.Prefix{}, LastSeen: now, CreatedAt: now,
				}
				if err := tx.Nodes().Insert(ctx, &n); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInsertNodes(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			be.need(b)
			s := be.open(b)
			seq := 0
			for b.Loop() {
				seq++
				b.StopTimer()
				_, nw := benchTenant(b, s, fmt.Sprintf("t%d", seq))
				b.StartTimer()
				insertNodes(b, s, nw, seq)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchNodes), "ns/node")
		})
	}
}

func BenchmarkListNodes(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			be.need(b)
			s := be.open(b)
			tn, nw := benchTenant(b, s, "t")
			insertNodes(b, s, nw, 0)
			ctx := context.Background()
			for b.Loop() {
				after, seen := "", 0
				for {
					page, err := s.ListNodes(ctx, tn.ID, after, benchPage)
					if err != nil {
						b.Fatal(err)
					}
					if len(page) == 0 {
						break
					}
					seen += len(page)
					after = page[len(page)-1].Name
				}
				if seen != benchNodes {
					b.Fatalf("paged through %d nodes, want %d", seen, benchNodes)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchNodes), "ns/node")
		})
	}
}
