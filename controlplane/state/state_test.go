package state_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/controlplane/store"
	"github.com/cvlan/cvlan/controlplane/store/sqlstore"
)

// failing wraps a store and makes the next Update fail after running fn, as a
// commit failure would.
type failing struct {
	store.Store
	fail bool
}

func (f *failing) Update(ctx context.Context, fn func(store.Tx) error) error {
	if f.fail {
		return errors.New("disk on fire")
	}
	return f.Store.Update(ctx, fn)
}

func open(t *testing.T) (*state.State, *failing, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cvlan.db")
	st, err := sqlstore.Open(context.Background(), sqlstore.Config{Driver: "sqlite", DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &failing{Store: st}
	s, err := state.Open(context.Background(), f, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s, f, path
}

func mustNetwork(t *testing.T, s *state.State, tenantID, name, cidr string) *model.Network {
	t.Helper()
	n, err := s.CreateNetwork(context.Background(), "test", model.Network{TenantID: tenantID, Name: name, IPv4: netip.MustParsePrefix(cidr)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSnapshotsAreImmutable(t *testing.T) {
	ctx := context.Background()
	s, _, _ := open(t)
	ten, err := s.CreateTenant(ctx, "test", model.Tenant{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	before := s.World()
	nw := mustNetwork(t, s, ten.ID, "prod", "100.64.0.0/24")
	if before.Tenant("acme").Networks.Len() != 0 {
		t.Fatal("a published snapshot changed after a write")
	}
	if got := s.World().Tenant("acme").Network("prod"); got == nil || got.ID != nw.ID {
		t.Fatalf("new snapshot lacks the network: %v", got)
	}
}

func TestFailedCommitPublishesNothing(t *testing.T) {
	ctx := context.Background()
	s, f, _ := open(t)
	ten, _ := s.CreateTenant(ctx, "test", model.Tenant{Name: "acme"})
	nw := mustNetwork(t, s, ten.ID, "prod", "100.64.0.0/24")
	before := s.World()
	f.fail = true
	if _, err := s.CreateNode(ctx, "test", model.Node{TenantID: ten.ID, NetworkID: nw.ID, Name: "a"}); err == nil {
		t.Fatal("CreateNode succeeded although the store failed")
	}
	if s.World() != before {
		t.Fatal("a change the store refused was published")
	}
	f.fail = false
	n, err := s.CreateNode(ctx, "test", model.Node{TenantID: ten.ID, NetworkID: nw.ID, Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if n.IPv4 != netip.MustParseAddr("100.64.0.1") {
		t.Fatalf("first node got %s; the failed attempt must not have consumed an address", n.IPv4)
	}
}

func TestReloadMatches(t *testing.T) {
	ctx := context.Background()
	s, f, _ := open(t)
	ten, _ := s.CreateTenant(ctx, "test", model.Tenant{Name: "acme"})
	nw := mustNetwork(t, s, ten.ID, "prod", "100.64.0.0/24")
	for _, name := range []string{"c", "a", "b"} {
		if _, err := s.CreateNode(ctx, "test", model.Node{TenantID: ten.ID, NetworkID: nw.ID, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	again, err := state.Open(ctx, f.Store, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tn := again.World().Tenant("acme")
	var names []string
	for _, n := range tn.Nodes.All() {
		names = append(names, n.Name)
		if !tn.AddrInUse(nw.ID, n.IPv4) {
			t.Errorf("reloaded state lost address %s of %s", n.IPv4, n.Name)
		}
	}
	if len(names) != 3 || names[0] != "a" || names[2] != "c" {
		t.Fatalf("reloaded nodes %v, want a b c", names)
	}
}

func TestConcurrentWritersAndReaders(t *testing.T) {
	ctx := context.Background()
	s, _, _ := open(t)
	ten, _ := s.CreateTenant(ctx, "test", model.Tenant{Name: "acme"})
	nw := mustNetwork(t, s, ten.ID, "prod", "100.64.0.0/22")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if _, err := s.CreateNode(ctx, "test", model.Node{TenantID: ten.ID, NetworkID: nw.ID, Name: "n-" + string(rune('a'+w)) + "-" + itoa(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				tn := s.World().Tenant("acme")
				seen := map[netip.Addr]bool{}
				for _, n := range tn.Nodes.All() {
					if seen[n.IPv4] {
						t.Errorf("two nodes share %s in one snapshot", n.IPv4)
						return
					}
					seen[n.IPv4] = true
				}
			}
		}()
	}
	wg.Wait()
	if got := s.World().Tenant("acme").Nodes.Len(); got != 100 {
		t.Fatalf("%d nodes, want 100", got)
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}
