package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// t0 has nanoseconds and is not in UTC, so round trips check both.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))

func at(d time.Duration) time.Time { return t0.Add(d) }

func rawKey(i int, kind byte) [key.Len]byte {
	var b [key.Len]byte
	b[0], b[1], b[2], b[31] = kind, byte(i), byte(i>>8), 1
	return b
}

func newTenant(name string) model.Tenant {
	return model.Tenant{ID: model.NewID(model.PrefixTenant), Name: name, Description: "tenant " + name, CreatedAt: t0}
}

func newNetwork(tn *model.Tenant, name, v4, v6 string) model.Network {
	n := model.Network{
		ID: model.NewID(model.PrefixNetwork), TenantID: tn.ID, Name: name, Description: "network " + name,
		IPv4: netip.MustParsePrefix(v4), MTU: 1380, CreatedAt: at(time.Second),
	}
	if v6 != "" {
		n.IPv6 = netip.MustParsePrefix(v6)
	}
	return n
}

// newNode is node i of nw with every field set; its addresses are the i-th of
// nw's prefixes.
func newNode(nw *model.Network, name string, i int) model.Node {
	n := model.Node{
		ID: model.NewID(model.PrefixNode), TenantID: nw.TenantID, NetworkID: nw.ID, Name: name,
		Kind: model.KindAgent, Tags: []string{"web", "prod"},
		MachineKey: key.MachinePublicFromRaw(rawKey(i, 'm')), NodeKey: key.NodePublicFromRaw(rawKey(i, 'n')),
		IPv4:      nth(nw.IPv4, i),
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:41641"), netip.MustParseAddrPort("[2001:db8::1]:41641")},
		HomeRelay: "rl_home",
		Routes:    []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:1::/64")},
		Ephemeral: true,
		LastSeen:  time.Now(), // carries a monotonic reading, which must not matter
		KeyExpiry: at(180 * 24 * time.Hour),
		CreatedAt: at(2 * time.Second),
	}
	if nw.IPv6.IsValid() {
		n.IPv6 = nth(nw.IPv6, i)
	}
	return n
}

func nth(p netip.Prefix, i int) netip.Addr {
	a := p.Addr()
	for range i {
		a = a.Next()
	}
	return a
}

func newKey(nw *model.Network) model.EnrollmentKey {
	return model.EnrollmentKey{
		ID: model.NewID(model.PrefixKey), TenantID: nw.TenantID, NetworkID: nw.ID, Description: "ci runners",
		Tags: []string{"ci"}, Reusable: true, MaxUses: 10, Uses: 3, Ephemeral: true,
		ExpiresAt: at(24 * time.Hour), Hash: model.HashSecret("secret"), CreatedAt: at(3 * time.Second),
		CreatedBy: "tk_admin",
	}
}

func newToken(tenantID string, role model.Role) model.Token {
	return model.Token{
		ID: model.NewID(model.PrefixToken), TenantID: tenantID, Role: role, Description: "token " + string(role),
		ExpiresAt: at(30 * 24 * time.Hour), Hash: model.HashSecret("token"), CreatedAt: at(4 * time.Second),
		CreatedBy: "init",
	}
}

func newRelay(name string, i int) model.Relay {
	return model.Relay{
		ID: model.NewID(model.PrefixRelay), Name: name, Region: "eu-west",
		PublicAddr: netip.MustParseAddr("198.51.100.7"), UDPPortMin: 40000, UDPPortMax: 40100, STUNPort: 3478,
		TLSURL: "https://" + name + ".example.net", WSURL: "wss://" + name + ".example.net/ws",
		RelayKey: key.RelayPublicFromRaw(rawKey(i, 'r')), CreatedAt: at(5 * time.Second),
	}
}

func newSite(vrouter *model.Node, name string) model.IPsecSite {
	return model.IPsecSite{
		ID: model.NewID(model.PrefixSite), TenantID: vrouter.TenantID, Name: name, VRouterNodeID: vrouter.ID,
		RemoteAddr: "vpn.example.com", LocalID: "cvlan", RemoteID: "branch", AuthMethod: model.AuthPSK,
		PSK: "0123456789abcdef", Certificate: "-----BEGIN CERTIFICATE-----",
		IKEProposals: []string{"aes256-sha256-modp2048"}, ESPProposals: []string{"aes256gcm16"},
		LocalSubnets:  []netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")},
		RemoteSubnets: []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24"), netip.MustParsePrefix("192.168.11.0/24")},
		CreatedAt:     at(6 * time.Second),
	}
}

func newPolicy(tenantID string, version int64, doc string) model.Policy {
	return model.Policy{TenantID: tenantID, Version: version, Document: doc, CreatedAt: at(time.Duration(version) * time.Minute), CreatedBy: "tk_admin"}
}

func newAudit(i int, tenantID string) model.AuditEntry {
	when := at(time.Duration(i) * time.Millisecond)
	return model.AuditEntry{
		ID: model.NewAuditID(when.UnixNano()), At: when, Actor: "tk_admin", TenantID: tenantID,
		Action: model.ActionCreate, Kind: "node", ObjectID: fmt.Sprintf("nd_%d", i), Detail: fmt.Sprintf("entry %d", i),
	}
}

// world is one tenant with one of everything, plus a second tenant.
type world struct {
	a, b     model.Tenant
	netA     model.Network
	netB     model.Network
	node     model.Node // in netA
	vrouter  model.Node // in netA
	key      model.EnrollmentKey
	operator model.Token // no tenant
	admin    model.Token // tenant a
	relay    model.Relay
	site     model.IPsecSite // on vrouter
	policy   model.Policy    // tenant a
}

func newWorld() *world {
	w := &world{a: newTenant("acme"), b: newTenant("bravo")}
	w.netA = newNetwork(&w.a, "prod", "100.64.0.0/24", "fd7a:115c:a1e0::/64")
	w.netB = newNetwork(&w.b, "prod", "100.64.0.0/24", "")
	w.node = newNode(&w.netA, "web-1", 1)
	w.vrouter = newNode(&w.netA, "edge", 2)
	w.vrouter.Kind = model.KindVRouter
	w.key = newKey(&w.netA)
	w.operator = newToken("", model.RoleOperator)
	w.admin = newToken(w.a.ID, model.RoleTenantAdmin)
	w.relay = newRelay("fra1", 1)
	w.site = newSite(&w.vrouter, "branch")
	w.policy = newPolicy(w.a.ID, 1, "allow tag:web -> tag:db:5432")
	return w
}

// insert is the list of steps that stores w, parents first.
func (w *world) insert() []step {
	return []step{
		ins(store.Tx.Tenants, &w.a), ins(store.Tx.Tenants, &w.b),
		ins(store.Tx.Networks, &w.netA), ins(store.Tx.Networks, &w.netB),
		ins(store.Tx.Nodes, &w.node), ins(store.Tx.Nodes, &w.vrouter),
		ins(store.Tx.EnrollmentKeys, &w.key),
		ins(store.Tx.Tokens, &w.operator), ins(store.Tx.Tokens, &w.admin),
		ins(store.Tx.Relays, &w.relay),
		ins(store.Tx.Sites, &w.site),
		func(ctx context.Context, tx store.Tx) error { return tx.AddPolicy(ctx, &w.policy) },
	}
}

// dump is what Load should return for w.
func (w *world) dump() *store.Dump {
	return &store.Dump{
		Tenants:        []model.Tenant{w.a, w.b},
		Networks:       sortedBy(func(n model.Network) string { return n.Name + "/" + n.ID }, w.netA, w.netB),
		Nodes:          sortedBy(func(n model.Node) string { return n.TenantID + "/" + n.Name }, w.node, w.vrouter),
		EnrollmentKeys: []model.EnrollmentKey{w.key},
		Tokens:         sortedBy(func(t model.Token) string { return t.ID }, w.operator, w.admin), // same created_at
		Relays:         []model.Relay{w.relay},
		Sites:          []model.IPsecSite{w.site},
		Policies:       []model.Policy{w.policy},
	}
}

func sortedBy[T any](key func(T) string, vs ...T) []T {
	slices.SortFunc(vs, func(a, b T) int {
		switch ka, kb := key(a), key(b); {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	return vs
}

// A step is one thing done inside a transaction.
type step func(ctx context.Context, tx store.Tx) error

func ins[T any](table func(store.Tx) store.Table[T], v *T) step {
	return func(ctx context.Context, tx store.Tx) error { return table(tx).Insert(ctx, v) }
}

func upd[T any](table func(store.Tx) store.Table[T], v *T) step {
	return func(ctx context.Context, tx store.Tx) error { return table(tx).Update(ctx, v) }
}

func del[T any](table func(store.Tx) store.Table[T], id string) step {
	return func(ctx context.Context, tx store.Tx) error { return table(tx).Delete(ctx, id) }
}

func audit(e model.AuditEntry) step {
	return func(ctx context.Context, tx store.Tx) error { return tx.Audit(ctx, &e) }
}

// run does steps in one transaction and returns Update's error.
func run(ctx context.Context, s store.Store, steps ...step) error {
	return s.Update(ctx, func(tx store.Tx) error {
		for _, st := range steps {
			if err := st(ctx, tx); err != nil {
				return err
			}
		}
		return nil
	})
}

func mustRun(t *testing.T, s store.Store, steps ...step) {
	t.Helper()
	if err := run(t.Context(), s, steps...); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func mustLoad(t *testing.T, s store.Store) *store.Dump {
	t.Helper()
	d, err := s.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return d
}

// checkDump compares got with want field by field.
func checkDump(t *testing.T, got, want *store.Dump) {
	t.Helper()
	check(t, "Tenants", got.Tenants, want.Tenants)
	check(t, "Networks", got.Networks, want.Networks)
	check(t, "Nodes", got.Nodes, want.Nodes)
	check(t, "EnrollmentKeys", got.EnrollmentKeys, want.EnrollmentKeys)
	check(t, "Tokens", got.Tokens, want.Tokens)
	check(t, "Relays", got.Relays, want.Relays)
	check(t, "Sites", got.Sites, want.Sites)
	check(t, "Policies", got.Policies, want.Policies)
}

// check compares a list the store returned with what was stored: exactly, except
// that times come back in UTC without a monotonic reading, and nil lists come
// back empty. A nil got is always wrong: the API must show [] rather than null.
func check[T any](t *testing.T, what string, got, want []T) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: got nil, want a non-nil slice", what)
		return
	}
	want = stored(want)
	if reflect.DeepEqual(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Errorf("%s: got %d rows, want %d:\n got %+v\nwant %+v", what, len(got), len(want), got, want)
		return
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("%s[%d] (%+v) differs:%s", what, i, want[i], fieldDiff(got[i], want[i]))
		}
	}
}

// fieldDiff lists the fields in which two structs differ.
func fieldDiff(got, want any) string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	if g.Kind() != reflect.Struct {
		return fmt.Sprintf("\n got %#v\nwant %#v", got, want)
	}
	var b strings.Builder
	for i := range g.NumField() {
		gf, wf := g.Field(i).Interface(), w.Field(i).Interface()
		if !reflect.DeepEqual(gf, wf) {
			fmt.Fprintf(&b, "\n  %s: got %s, want %s", g.Type().Field(i).Name, show(gf), show(wf))
		}
	}
	return b.String()
}

func show(v any) string {
	switch v := v.(type) {
	case time.Time:
		return fmt.Sprintf("%s (location %q, %s)", v.Format(time.RFC3339Nano), v.Location(), v.String())
	case fmt.Stringer:
		return fmt.Sprintf("%q", v.String())
	}
	return fmt.Sprintf("%#v", v)
}

// stored returns a deep copy of vs as the store gives values back.
func stored[T any](vs []T) []T {
	out := make([]T, len(vs))
	for i := range vs {
		v := reflect.ValueOf(&out[i]).Elem()
		v.Set(reflect.ValueOf(vs[i]))
		normalize(v)
	}
	return out
}

var timeType = reflect.TypeFor[time.Time]()

func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == timeType {
			if t := v.Interface().(time.Time); !t.IsZero() {
				v.Set(reflect.ValueOf(time.Unix(0, t.UnixNano()).UTC()))
			}
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalize(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(c, v)
		v.Set(c)
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	}
}

// wantErr checks that err is, or wraps, target, and says what was being done.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	switch {
	case target == nil && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case target == nil:
	case !errors.Is(err, target):
		t.Errorf("%s: got error %v, want %v", what, err, target)
	case err.Error() == target.Error():
		t.Errorf("%s: error %q does not say what was being done", what, err)
	}
}
