// Package storetest is the conformance suite for store.Store: every
// implementation (SQLite and PostgreSQL in package sqlstore) must pass Run. It
// checks the contract as callers see it — round trips, sentinel errors,
// constraints, atomicity, ordering and paging, concurrency, Close — and never
// anything about how an implementation stores its rows.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// Run runs the suite. open must return a new, empty store for each call and
// arrange (with t.Cleanup) for it to be closed and removed; the suite may close
// it earlier itself.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Empty", testEmpty},
		{"RoundTrip", testRoundTrip},
		{"ZeroValues", testZeroValues},
		{"NotFound", testNotFound},
		{"Conflict", testConflict},
		{"Rollback", testRollback},
		{"FailedStatementAbortsTx", testFailedStatement},
		{"Policies", testPolicies},
		{"AuditLog", testAuditLog},
		{"ListNodes", testListNodes},
		{"Concurrent", testConcurrent},
		{"SchemaVersion", testSchemaVersion},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func testEmpty(t *testing.T, s store.Store) {
	checkDump(t, mustLoad(t, s), &store.Dump{
		Tenants: []model.Tenant{}, Networks: []model.Network{}, Nodes: []model.Node{},
		EnrollmentKeys: []model.EnrollmentKey{}, Tokens: []model.Token{}, Relays: []model.Relay{},
		Sites: []model.IPsecSite{}, Policies: []model.Policy{},
	})
}

// testRoundTrip stores one of everything with every field set, changes every
// field that can change, then deletes everything.
func testRoundTrip(t *testing.T, s store.Store) {
	w := newWorld()
	mustRun(t, s, w.insert()...)
	checkDump(t, mustLoad(t, s), w.dump())

	w.a.Name, w.a.Description, w.a.CreatedAt = "acme-corp", "renamed", at(time.Hour)
	w.netA.Name, w.netA.Description, w.netA.MTU = "staging", "", 1420
	w.netA.IPv4, w.netA.IPv6 = netip.MustParsePrefix("100.65.0.0/16"), netip.MustParsePrefix("fd00:2::/48")
	w.node.Name, w.node.Kind, w.node.Tags = "web-2", model.KindGateway, []string{"gw"}
	w.node.MachineKey, w.node.NodeKey = key.MachinePublicFromRaw(rawKey(99, 'm')), key.NodePublicFromRaw(rawKey(99, 'n'))
	w.node.IPv4, w.node.IPv6 = netip.MustParseAddr("100.64.0.99"), netip.MustParseAddr("fd7a:115c:a1e0::99")
	w.node.Endpoints, w.node.Routes = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.9:1")}, []netip.Prefix{}
	w.node.HomeRelay, w.node.Ephemeral, w.node.LastSeen, w.node.KeyExpiry = "", false, time.Time{}, at(time.Hour)
	w.key.Uses, w.key.Tags, w.key.Reusable, w.key.MaxUses, w.key.Ephemeral = 4, []string{}, false, 1, false
	w.key.Description, w.key.ExpiresAt, w.key.Hash, w.key.CreatedBy = "once", at(2*time.Hour), "h2", "tk_other"
	w.admin.Role, w.admin.Description, w.admin.ExpiresAt, w.admin.Hash = model.RoleTenantViewer, "viewer", time.Time{}, "h3"
	w.relay.Name, w.relay.Region, w.relay.PublicAddr = "ams1", "eu-north", netip.MustParseAddr("2001:db8::7")
	w.relay.UDPPortMin, w.relay.UDPPortMax, w.relay.STUNPort = 65535, 65535, 65535
	w.relay.TLSURL, w.relay.WSURL, w.relay.RelayKey = "", "", key.RelayPublic{}
	w.site.Name, w.site.RemoteAddr, w.site.LocalID, w.site.RemoteID = "hq", "198.51.100.1", "l", "r"
	w.site.AuthMethod, w.site.PSK, w.site.Certificate = model.AuthCert, "", "cert"
	w.site.IKEProposals, w.site.ESPProposals = []string{"a", "b"}, nil
	w.site.LocalSubnets, w.site.RemoteSubnets = []netip.Prefix{netip.MustParsePrefix("fd00::/64")}, nil
	mustRun(t, s,
		upd(store.Tx.Tenants, &w.a), upd(store.Tx.Networks, &w.netA), upd(store.Tx.Nodes, &w.node),
		upd(store.Tx.EnrollmentKeys, &w.key), upd(store.Tx.Tokens, &w.admin), upd(store.Tx.Relays, &w.relay),
		upd(store.Tx.Sites, &w.site),
	)
	checkDump(t, mustLoad(t, s), w.dump())

	mustRun(t, s,
		del(store.Tx.Sites, w.site.ID), del(store.Tx.EnrollmentKeys, w.key.ID),
		del(store.Tx.Nodes, w.node.ID), del(store.Tx.Nodes, w.vrouter.ID),
		del(store.Tx.Networks, w.netA.ID), del(store.Tx.Networks, w.netB.ID),
		del(store.Tx.Tokens, w.admin.ID), del(store.Tx.Tokens, w.operator.ID),
		del(store.Tx.Tenants, w.a.ID), del(store.Tx.Tenants, w.b.ID), del(store.Tx.Relays, w.relay.ID),
	)
	testEmpty(t, s)
}

// testZeroValues stores objects with every optional field unset: they come back
// unset, with empty (not nil) lists.
func testZeroValues(t *testing.T, s store.Store) {
	tn := model.Tenant{ID: model.NewID(model.PrefixTenant), Name: "zero"}
	nw := model.Network{ID: model.NewID(model.PrefixNetwork), TenantID: tn.ID, Name: "n", IPv4: netip.MustParsePrefix("10.0.0.0/8")}
	n1 := model.Node{ID: model.NewID(model.PrefixNode), TenantID: tn.ID, NetworkID: nw.ID, Name: "a", Kind: model.KindAgent}
	n2 := model.Node{ID: model.NewID(model.PrefixNode), TenantID: tn.ID, NetworkID: nw.ID, Name: "b", Tags: []string{}}
	k := model.EnrollmentKey{ID: model.NewID(model.PrefixKey), TenantID: tn.ID, NetworkID: nw.ID}
	tok := model.Token{ID: model.NewID(model.PrefixToken), Role: model.RoleOperator}
	r := model.Relay{ID: model.NewID(model.PrefixRelay), Name: "r"}
	site := model.IPsecSite{ID: model.NewID(model.PrefixSite), TenantID: tn.ID, Name: "s", VRouterNodeID: n1.ID}
	pol := model.Policy{TenantID: tn.ID}
	mustRun(t, s,
		ins(store.Tx.Tenants, &tn), ins(store.Tx.Networks, &nw), ins(store.Tx.Nodes, &n1), ins(store.Tx.Nodes, &n2),
		ins(store.Tx.EnrollmentKeys, &k), ins(store.Tx.Tokens, &tok), ins(store.Tx.Relays, &r),
		ins(store.Tx.Sites, &site), func(ctx context.Context, tx store.Tx) error { return tx.AddPolicy(ctx, &pol) },
	)
	checkDump(t, mustLoad(t, s), &store.Dump{
		Tenants: []model.Tenant{tn}, Networks: []model.Network{nw}, Nodes: []model.Node{n1, n2},
		EnrollmentKeys: []model.EnrollmentKey{k}, Tokens: []model.Token{tok}, Relays: []model.Relay{r},
		Sites: []model.IPsecSite{site}, Policies: []model.Policy{pol},
	})
}

func testNotFound(t *testing.T, s store.Store) {
	w := newWorld()
	mustRun(t, s, w.insert()...)
	// Each would be fine if its ID existed.
	tests := []struct {
		name string
		step step
	}{
		{"update tenant", upd(store.Tx.Tenants, &model.Tenant{ID: "tn_missing", Name: "x"})},
		{"update network", upd(store.Tx.Networks, &model.Network{ID: "nw_missing", TenantID: w.a.ID, Name: "x"})},
		{"update node", upd(store.Tx.Nodes, &model.Node{ID: "nd_missing", TenantID: w.a.ID, NetworkID: w.netA.ID, Name: "x"})},
		{"update enrollment key", upd(store.Tx.EnrollmentKeys, &model.EnrollmentKey{ID: "ek_missing", TenantID: w.a.ID, NetworkID: w.netA.ID})},
		{"update token", upd(store.Tx.Tokens, &model.Token{ID: "tk_missing"})},
		{"update relay", upd(store.Tx.Relays, &model.Relay{ID: "rl_missing", Name: "x"})},
		{"update site", upd(store.Tx.Sites, &model.IPsecSite{ID: "st_missing", TenantID: w.a.ID, Name: "x", VRouterNodeID: w.vrouter.ID})},
		{"delete tenant", del(store.Tx.Tenants, "tn_missing")},
		{"delete network", del(store.Tx.Networks, "nw_missing")},
		{"delete node", del(store.Tx.Nodes, "nd_missing")},
		{"delete enrollment key", del(store.Tx.EnrollmentKeys, "ek_missing")},
		{"delete token", del(store.Tx.Tokens, "tk_missing")},
		{"delete relay", del(store.Tx.Relays, "rl_missing")},
		{"delete site", del(store.Tx.Sites, "st_missing")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, tt.name, run(t.Context(), s, tt.step), store.ErrNotFound)
		})
	}
	checkDump(t, mustLoad(t, s), w.dump())
}

// errProbe ends a transaction that did what it should, so that it is rolled back
// and every case starts from the same state.
var errProbe = errors.New("probe succeeded; rolling back")

func testConflict(t *testing.T, s store.Store) {
	w := newWorld()
	mustRun(t, s, w.insert()...)
	// A second network and node in tenant a, and a node in netB at the same
	// address as w.node in netA, which is allowed.
	dev := newNetwork(&w.a, "dev", "100.80.0.0/24", "")
	other := newNode(&w.netA, "db", 3)
	inB := newNode(&w.netB, "web-1", 1)
	inB.MachineKey, inB.NodeKey = key.MachinePublic{}, key.NodePublic{}
	mustRun(t, s, ins(store.Tx.Networks, &dev), ins(store.Tx.Nodes, &other), ins(store.Tx.Nodes, &inB))

	tests := []struct {
		name string
		step step
		want error // nil: allowed
	}{
		{"tenant name taken", ins(store.Tx.Tenants, ptr(newTenant("acme"))), store.ErrConflict},
		{"tenant ID taken", ins(store.Tx.Tenants, with(w.a, func(v *model.Tenant) { v.Name = "new" })), store.ErrConflict},
		{"network name taken in tenant", ins(store.Tx.Networks, ptr(newNetwork(&w.a, "prod", "100.70.0.0/24", ""))), store.ErrConflict},
		{"network name of another tenant", ins(store.Tx.Networks, ptr(newNetwork(&w.b, "staging", "100.70.0.0/24", ""))), nil},
		{"network in missing tenant", ins(store.Tx.Networks, ptr(newNetwork(&model.Tenant{ID: "tn_missing"}, "x", "100.70.0.0/24", ""))), store.ErrConflict},
		{"network renamed to a taken name", upd(store.Tx.Networks, with(dev, func(v *model.Network) { v.Name = "prod" })), store.ErrConflict},
		{"network renamed", upd(store.Tx.Networks, with(dev, func(v *model.Network) { v.Name = "test" })), nil},
		{"node name taken in tenant", ins(store.Tx.Nodes, ptr(newNode(&w.netA, "web-1", 50))), store.ErrConflict},
		{"node IPv4 taken in network", ins(store.Tx.Nodes, with(newNode(&w.netA, "x", 50), func(v *model.Node) { v.IPv4 = w.node.IPv4 })), store.ErrConflict},
		{"node IPv6 taken in network", ins(store.Tx.Nodes, with(newNode(&w.netA, "x", 50), func(v *model.Node) { v.IPv6 = w.node.IPv6 })), store.ErrConflict},
		{"node machine key taken", ins(store.Tx.Nodes, with(newNode(&w.netA, "x", 50), func(v *model.Node) { v.MachineKey = w.node.MachineKey })), store.ErrConflict},
		{"node moved to a taken IPv4", upd(store.Tx.Nodes, with(other, func(v *model.Node) { v.IPv4 = w.node.IPv4 })), store.ErrConflict},
		{"node renamed to a taken name", upd(store.Tx.Nodes, with(other, func(v *model.Node) { v.Name = w.node.Name })), store.ErrConflict},
		{"nodes without addresses or keys", func(ctx context.Context, tx store.Tx) error {
			for _, name := range []string{"bare-1", "bare-2"} {
				n := model.Node{ID: model.NewID(model.PrefixNode), TenantID: w.a.ID, NetworkID: w.netA.ID, Name: name, Kind: model.KindAgent}
				if err := tx.Nodes().Insert(ctx, &n); err != nil {
					return err
				}
			}
			return nil
		}, nil},
		{"node in missing network", ins(store.Tx.Nodes, ptr(newNode(&model.Network{ID: "nw_missing", TenantID: w.a.ID, IPv4: w.netA.IPv4}, "x", 50))), store.ErrConflict},
		{"node in another tenant's network", ins(store.Tx.Nodes, with(newNode(&w.netB, "x", 50), func(v *model.Node) { v.TenantID = w.a.ID })), store.ErrConflict},
		{"enrollment key for missing network", ins(store.Tx.EnrollmentKeys, ptr(newKey(&model.Network{ID: "nw_missing", TenantID: w.a.ID}))), store.ErrConflict},
		{"enrollment key for another tenant's network", ins(store.Tx.EnrollmentKeys, with(newKey(&w.netB), func(v *model.EnrollmentKey) { v.TenantID = w.a.ID })), store.ErrConflict},
		{"token for missing tenant", ins(store.Tx.Tokens, ptr(newToken("tn_missing", model.RoleTenantAdmin))), store.ErrConflict},
		{"operator token", ins(store.Tx.Tokens, ptr(newToken("", model.RoleOperator))), nil},
		{"relay name taken", ins(store.Tx.Relays, ptr(newRelay("fra1", 2))), store.ErrConflict},
		{"site name taken in tenant", ins(store.Tx.Sites, ptr(newSite(&w.vrouter, "branch"))), store.ErrConflict},
		{"site on missing node", ins(store.Tx.Sites, ptr(newSite(&model.Node{ID: "nd_missing", TenantID: w.a.ID}, "x"))), store.ErrConflict},
		{"site on another tenant's node", ins(store.Tx.Sites, with(newSite(&inB, "x"), func(v *model.IPsecSite) { v.TenantID = w.a.ID })), store.ErrConflict},
		{"policy for missing tenant", func(ctx context.Context, tx store.Tx) error {
			return tx.AddPolicy(ctx, ptr(newPolicy("tn_missing", 1, "x")))
		}, store.ErrConflict},
		{"delete tenant with networks", del(store.Tx.Tenants, w.b.ID), store.ErrConflict},
		{"delete network with nodes", del(store.Tx.Networks, w.netB.ID), store.ErrConflict},
		{"delete network with enrollment keys", func(ctx context.Context, tx store.Tx) error {
			for _, n := range []*model.Node{&w.node, &other} {
				if err := tx.Nodes().Delete(ctx, n.ID); err != nil {
					return err
				}
			}
			if err := tx.Sites().Delete(ctx, w.site.ID); err != nil {
				return err
			}
			if err := tx.Nodes().Delete(ctx, w.vrouter.ID); err != nil {
				return err
			}
			return tx.Networks().Delete(ctx, w.netA.ID)
		}, store.ErrConflict},
		{"delete node used by a site", del(store.Tx.Nodes, w.vrouter.ID), store.ErrConflict},
		{"delete tenant with tokens only", func(ctx context.Context, tx store.Tx) error {
			tn := newTenant("tokens-only")
			tok := newToken(tn.ID, model.RoleTenantViewer)
			if err := tx.Tenants().Insert(ctx, &tn); err != nil {
				return err
			}
			if err := tx.Tokens().Insert(ctx, &tok); err != nil {
				return err
			}
			return tx.Tenants().Delete(ctx, tn.ID)
		}, store.ErrConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Update(t.Context(), func(tx store.Tx) error {
				if err := tt.step(t.Context(), tx); err != nil {
					return err
				}
				return errProbe
			})
			if tt.want == nil {
				if err != errProbe {
					t.Errorf("%s: unexpected error %v", tt.name, err)
				}
			} else {
				wantErr(t, tt.name, err, tt.want)
			}
		})
	}
	want := w.dump()
	want.Networks = sortedBy(func(n model.Network) string { return n.Name + "/" + n.ID }, w.netA, w.netB, dev)
	want.Nodes = sortedBy(func(n model.Node) string { return n.TenantID + "/" + n.Name }, w.node, w.vrouter, other, inB)
	checkDump(t, mustLoad(t, s), want)
}

func ptr[T any](v T) *T { return &v }

// with returns a copy of v changed by f.
func with[T any](v T, f func(*T)) *T {
	f(&v)
	return &v
}

// testRollback: when fn fails, nothing it did is kept, audit entries included.
func testRollback(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := newWorld()
	mustRun(t, s, w.insert()...)
	before := mustLoad(t, s)
	boom := errors.New("boom")
	tn := newTenant("ghost")
	nw := newNetwork(&tn, "ghost", "10.0.0.0/24", "")
	n := newNode(&nw, "ghost", 77)
	renamed := with(w.a, func(v *model.Tenant) { v.Description = "changed" })
	err := s.Update(ctx, func(tx store.Tx) error {
		for _, st := range []step{
			ins(store.Tx.Tenants, &tn), ins(store.Tx.Networks, &nw), ins(store.Tx.Nodes, &n),
			upd(store.Tx.Tenants, renamed), del(store.Tx.Relays, w.relay.ID), del(store.Tx.Sites, w.site.ID),
			func(ctx context.Context, tx store.Tx) error {
				return tx.AddPolicy(ctx, ptr(newPolicy(w.a.ID, 2, "new")))
			},
			audit(newAudit(1, w.a.ID)),
		} {
			if err := st(ctx, tx); err != nil {
				t.Errorf("inside Update: %v", err)
			}
		}
		return fmt.Errorf("validating: %w", boom)
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	checkDump(t, mustLoad(t, s), before)
	if es, err := s.AuditLog(ctx, store.AuditQuery{}); err != nil || len(es) != 0 {
		t.Errorf("AuditLog after rollback = %v, %v; want nothing", es, err)
	}
	if ps, err := s.PolicyVersions(ctx, w.a.ID, 10); err != nil || len(ps) != 1 {
		t.Errorf("PolicyVersions after rollback = %v, %v; want only version 1", ps, err)
	}

	// A panic in fn rolls back too, and the store stays usable.
	func() {
		defer func() { recover() }()
		s.Update(ctx, func(tx store.Tx) error {
			tx.Tenants().Insert(ctx, ptr(newTenant("panicky")))
			panic("fn panicked")
		})
	}()
	mustRun(t, s, ins(store.Tx.Tenants, ptr(newTenant("after-panic"))))
	if got := len(mustLoad(t, s).Tenants); got != len(before.Tenants)+1 {
		t.Errorf("after a panicking Update and a good one: %d tenants, want %d", got, len(before.Tenants)+1)
	}
}

// testFailedStatement: a statement that fails ends the transaction even if fn
// ignores its error and returns nil (PostgreSQL refuses to go on after a failed
// statement; every implementation must behave the same).
func testFailedStatement(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := newWorld()
	mustRun(t, s, w.insert()...)
	before := mustLoad(t, s)
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Tenants().Insert(ctx, ptr(newTenant("kept-if-committed"))); err != nil {
			t.Errorf("first insert: %v", err)
		}
		if err := tx.Tenants().Insert(ctx, ptr(newTenant("acme"))); !errors.Is(err, store.ErrConflict) {
			t.Errorf("duplicate insert = %v, want ErrConflict", err)
		}
		tx.Tenants().Insert(ctx, ptr(newTenant("after-the-failure")))
		return nil // ignoring the failure
	})
	wantErr(t, "Update after an ignored conflict", err, store.ErrConflict)
	checkDump(t, mustLoad(t, s), before)

	// ErrNotFound is an answer, not a failed statement: the transaction goes on.
	tn := newTenant("upsert")
	mustRun(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.Tenants().Update(ctx, &tn); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("update of a missing tenant = %v, want ErrNotFound", err)
		}
		return tx.Tenants().Insert(ctx, &tn)
	})
	check(t, "Tenants", mustLoad(t, s).Tenants, []model.Tenant{w.a, w.b, tn})
}

func testPolicies(t *testing.T, s store.Store) {
	ctx := t.Context()
	w := newWorld()
	mustRun(t, s, w.insert()...) // w.policy is version 1 of tenant a
	add := func(p model.Policy) step {
		return func(ctx context.Context, tx store.Tx) error { return tx.AddPolicy(ctx, &p) }
	}
	a2, a3 := newPolicy(w.a.ID, 2, "v2"), newPolicy(w.a.ID, 3, "") // 3 deletes the policy
	b1, b7 := newPolicy(w.b.ID, 1, "b1"), newPolicy(w.b.ID, 7, "b7")
	mustRun(t, s, add(a3), add(b7), add(a2), add(b1))
	wantErr(t, "duplicate version", run(ctx, s, add(newPolicy(w.a.ID, 2, "again"))), store.ErrConflict)

	check(t, "Load().Policies", mustLoad(t, s).Policies,
		sortedBy(func(p model.Policy) string { return p.TenantID }, a3, b7))
	for _, tt := range []struct {
		tenant string
		limit  int
		want   []model.Policy
	}{
		{w.a.ID, 10, []model.Policy{a3, a2, w.policy}},
		{w.a.ID, 2, []model.Policy{a3, a2}},
		{w.a.ID, 0, []model.Policy{a3, a2, w.policy}}, // default limit
		{w.b.ID, 10, []model.Policy{b7, b1}},
		{"tn_missing", 10, []model.Policy{}},
	} {
		got, err := s.PolicyVersions(ctx, tt.tenant, tt.limit)
		if err != nil {
			t.Fatalf("PolicyVersions(%s, %d): %v", tt.tenant, tt.limit, err)
		}
		check(t, fmt.Sprintf("PolicyVersions(%s, %d)", tt.tenant, tt.limit), got, tt.want)
	}

	// A tenant's policies go with it.
	tn := newTenant("short-lived")
	mustRun(t, s, ins(store.Tx.Tenants, &tn), add(newPolicy(tn.ID, 1, "x")))
	mustRun(t, s, del(store.Tx.Tenants, tn.ID))
	if got, err := s.PolicyVersions(ctx, tn.ID, 10); err != nil || len(got) != 0 {
		t.Errorf("PolicyVersions of a deleted tenant = %v, %v; want none", got, err)
	}
}

func testAuditLog(t *testing.T, s store.Store) {
	ctx := t.Context()
	// 120 entries over two tenants and none, written in random order over
	// several transactions. IDs sort by time, so newest first is descending ID.
	const n = 120
	tenants := []string{"tn_a", "tn_b", ""}
	var all []model.AuditEntry
	for i := range n {
		all = append(all, newAudit(i, tenants[i%3]))
	}
	shuffled := slices.Clone(all)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for chunk := range slices.Chunk(shuffled, 25) {
		var steps []step
		for _, e := range chunk {
			steps = append(steps, audit(e))
		}
		mustRun(t, s, steps...)
	}
	newest := slices.Clone(all)
	slices.Reverse(newest)
	ofTenant := func(id string) []model.AuditEntry {
		return slices.DeleteFunc(slices.Clone(newest), func(e model.AuditEntry) bool { return e.TenantID != id })
	}

	for _, tt := range []struct {
		name string
		q    store.AuditQuery
		want []model.AuditEntry
	}{
		{"default limit", store.AuditQuery{}, newest[:100]},
		{"all", store.AuditQuery{Limit: 5000}, newest},
		{"limit", store.AuditQuery{Limit: 7}, newest[:7]},
		{"before", store.AuditQuery{Before: newest[9].ID, Limit: 5}, newest[10:15]},
		{"tenant", store.AuditQuery{TenantID: "tn_b", Limit: 1000}, ofTenant("tn_b")},
		{"tenant before", store.AuditQuery{TenantID: "tn_a", Before: ofTenant("tn_a")[3].ID, Limit: 2}, ofTenant("tn_a")[4:6]},
		{"before the oldest", store.AuditQuery{Before: all[0].ID}, []model.AuditEntry{}},
		{"unknown tenant", store.AuditQuery{TenantID: "tn_missing"}, []model.AuditEntry{}},
	} {
		got, err := s.AuditLog(ctx, tt.q)
		if err != nil {
			t.Fatalf("%s: AuditLog(%+v): %v", tt.name, tt.q, err)
		}
		check(t, tt.name, got, tt.want)
	}

	// Paging from the newest to the end visits every entry once, in order.
	var paged []model.AuditEntry
	q := store.AuditQuery{TenantID: "", Limit: 11}
	for {
		page, err := s.AuditLog(ctx, q)
		if err != nil {
			t.Fatalf("AuditLog(%+v): %v", q, err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		q.Before = page[len(page)-1].ID
	}
	check(t, "paged", paged, newest)

	wantErr(t, "duplicate audit ID", run(ctx, s, audit(all[0])), store.ErrConflict)
}

func testListNodes(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := newTenant("a"), newTenant("b")
	na, nb := newNetwork(&a, "n", "100.64.0.0/24", ""), newNetwork(&b, "n", "100.64.0.0/24", "")
	steps := []step{ins(store.Tx.Tenants, &a), ins(store.Tx.Tenants, &b), ins(store.Tx.Networks, &na), ins(store.Tx.Networks, &nb)}
	var want []model.Node
	for _, i := range rand.Perm(25) {
		n := newNode(&na, fmt.Sprintf("node-%02d", i), i+1)
		want = append(want, n)
		steps = append(steps, ins(store.Tx.Nodes, &n))
	}
	for i := range 3 {
		n := newNode(&nb, fmt.Sprintf("node-%02d", i), 100+i)
		steps = append(steps, ins(store.Tx.Nodes, &n))
	}
	mustRun(t, s, steps...)
	want = sortedBy(func(n model.Node) string { return n.Name }, want...)

	var got []model.Node
	after := ""
	for pages := 0; ; pages++ {
		page, err := s.ListNodes(ctx, a.ID, after, 10)
		if err != nil {
			t.Fatalf("ListNodes(%q, 10): %v", after, err)
		}
		if len(page) > 10 || pages > 3 {
			t.Fatalf("ListNodes(%q, 10) returned %d nodes (page %d)", after, len(page), pages)
		}
		if len(page) == 0 {
			if pages != 3 {
				t.Errorf("25 nodes took %d pages of 10, want 3", pages)
			}
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].Name
	}
	check(t, "paged ListNodes", got, want)

	all, err := s.ListNodes(ctx, a.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, "ListNodes with the default limit", all, want)
	none, err := s.ListNodes(ctx, "tn_missing", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	check(t, "ListNodes of a missing tenant", none, []model.Node{})
}

// testConcurrent: Updates from several goroutines, while others read, all land.
func testConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := newTenant("busy")
	nw := newNetwork(&tn, "n", "100.64.0.0/16", "")
	mustRun(t, s, ins(store.Tx.Tenants, &tn), ins(store.Tx.Networks, &nw))
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each+64)
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Load(ctx); err != nil {
					errs <- fmt.Errorf("reader: Load: %w", err)
					return
				}
				if _, err := s.ListNodes(ctx, tn.ID, "", 100); err != nil {
					errs <- fmt.Errorf("reader: ListNodes: %w", err)
					return
				}
			}
		})
	}
	var writing sync.WaitGroup
	for g := range writers {
		writing.Go(func() {
			for i := range each {
				j := g*each + i
				n := newNode(&nw, fmt.Sprintf("w%d-%02d", g, i), j+1)
				e := newAudit(j, tn.ID)
				if err := run(ctx, s, ins(store.Tx.Nodes, &n), audit(e)); err != nil {
					errs <- fmt.Errorf("writer %d, update %d: %w", g, i, err)
				}
			}
		})
	}
	writing.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(mustLoad(t, s).Nodes); got != writers*each {
		t.Errorf("%d nodes after concurrent updates, want %d", got, writers*each)
	}
	if es, err := s.AuditLog(ctx, store.AuditQuery{Limit: 1000}); err != nil || len(es) != writers*each {
		t.Errorf("AuditLog after concurrent updates: %d entries, %v; want %d", len(es), err, writers*each)
	}
}

func testSchemaVersion(t *testing.T, s store.Store) {
	v, err := s.SchemaVersion(t.Context())
	if err != nil || v < 1 {
		t.Errorf("SchemaVersion = %d, %v; want a version >= 1", v, err)
	}
}

func testClosed(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	calls := map[string]func() error{
		"Update": func() error {
			return run(ctx, s, ins(store.Tx.Tenants, ptr(newTenant("late"))))
		},
		"Load":           func() error { _, err := s.Load(ctx); return err },
		"ListNodes":      func() error { _, err := s.ListNodes(ctx, "tn_x", "", 1); return err },
		"PolicyVersions": func() error { _, err := s.PolicyVersions(ctx, "tn_x", 1); return err },
		"AuditLog":       func() error { _, err := s.AuditLog(ctx, store.AuditQuery{}); return err },
		"SchemaVersion":  func() error { _, err := s.SchemaVersion(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s after Close succeeded", name)
		}
	}
}
