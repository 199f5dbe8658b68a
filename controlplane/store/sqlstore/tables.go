package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// kind is one table: its columns and the statements built from them. Insert,
// Update, Delete and scanning are written once, in terms of a kind.
type kind[T any] struct {
	noun    string            // the kind in errors: "network"
	columns func(*T) []column // the first column is the primary key ("id")
	ref     func(*T) string   // one row in errors: its quoted name, or its ID
	insert  string            // INSERT … VALUES (?, …)
	update  string            // UPDATE … SET every other column … WHERE id = ?
	delete  string            // DELETE … WHERE id = ?
	sel     string            // SELECT every column FROM table
	load    string            // sel ORDER BY the Load order
}

func newKind[T any](d *dialect, noun, table, order string, columns func(*T) []column, ref func(*T) string) *kind[T] {
	var zero T
	cols := columns(&zero)
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ")
	sets := strings.Join(names[1:], " = ?, ") + " = ?"
	k := &kind[T]{noun: noun, columns: columns, ref: ref}
	k.insert = d.rebind("INSERT INTO " + table + " (" + strings.Join(names, ", ") + ") VALUES (" + marks + ")")
	k.update = d.rebind("UPDATE " + table + " SET " + sets + " WHERE " + names[0] + " = ?")
	k.delete = d.rebind("DELETE FROM " + table + " WHERE " + names[0] + " = ?")
	k.sel = "SELECT " + strings.Join(names, ", ") + " FROM " + table
	k.load = k.sel + " ORDER BY " + order
	return k
}

// id is v's primary key.
func (k *kind[T]) id(v *T) string { return *k.columns(v)[0].ptr.(*string) }

// values are v's columns as driver arguments, in column order.
func (k *kind[T]) values(v *T) ([]any, error) {
	cols := k.columns(v)
	args := make([]any, len(cols))
	for i, c := range cols {
		a, err := c.value()
		if err != nil {
			return nil, err
		}
		args[i] = a
	}
	return args, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// query runs q, which selects k.sel's columns, and reads every row. The result is
// never nil.
func query[T any](ctx context.Context, db querier, k *kind[T], q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		var v T
		cols := k.columns(&v)
		dst := make([]any, len(cols))
		for i, c := range cols {
			dst[i] = c.ptr
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, fmt.Errorf("reading %s: %w", k.noun, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", k.noun, err)
	}
	return out, nil
}

// loadAll is query into *dst, unless *err is already set; it sets *err on failure.
func loadAll[T any](ctx context.Context, db querier, k *kind[T], q string, dst *[]T, err *error) {
	if *err == nil {
		*dst, *err = query(ctx, db, k, q)
	}
}

// writes are every statement a tx runs.
func (k *kinds) writes() []string {
	return []string{
		k.tenants.insert, k.tenants.update, k.tenants.delete,
		k.networks.insert, k.networks.update, k.networks.delete,
		k.nodes.insert, k.nodes.update, k.nodes.delete,
		k.keys.insert, k.keys.update, k.keys.delete,
		k.tokens.insert, k.tokens.update, k.tokens.delete,
		k.relays.insert, k.relays.update, k.relays.delete,
		k.sites.insert, k.sites.update, k.sites.delete,
		k.policies.insert, k.audit.insert,
	}
}

// kinds are the store's tables, with statements built for its dialect.
type kinds struct {
	tenants  *kind[model.Tenant]
	networks *kind[model.Network]
	nodes    *kind[model.Node]
	keys     *kind[model.EnrollmentKey]
	tokens   *kind[model.Token]
	relays   *kind[model.Relay]
	sites    *kind[model.IPsecSite]
	policies *kind[model.Policy]
	audit    *kind[model.AuditEntry]
}

func newKinds(d *dialect) *kinds {
	byID := func(id *string) string { return *id }
	return &kinds{
		tenants: newKind(d, "tenant", "tenants", "name", func(v *model.Tenant) []column {
			return []column{
				{"id", &v.ID}, {"name", &v.Name}, {"description", &v.Description},
				{"created_at", nanos{&v.CreatedAt}},
			}
		}, func(v *model.Tenant) string { return strconv.Quote(v.Name) }),

		networks: newKind(d, "network", "networks", "name, id", func(v *model.Network) []column {
			return []column{
				{"id", &v.ID}, {"tenant_id", &v.TenantID}, {"name", &v.Name},
				{"description", &v.Description}, {"ipv4", text{&v.IPv4}}, {"ipv6", text{&v.IPv6}},
				{"mtu", &v.MTU}, {"created_at", nanos{&v.CreatedAt}},
			}
		}, func(v *model.Network) string { return strconv.Quote(v.Name) }),

		nodes: newKind(d, "node", "nodes", "tenant_id, name", func(v *model.Node) []column {
			return []column{
				{"id", &v.ID}, {"tenant_id", &v.TenantID}, {"network_id", &v.NetworkID},
				{"name", &v.Name}, {"kind", str[model.NodeKind]{&v.Kind}}, {"tags", list[string]{&v.Tags}},
				{"machine_key", text{&v.MachineKey}}, {"node_key", text{&v.NodeKey}},
				{"ipv4", text{&v.IPv4}}, {"ipv6", text{&v.IPv6}},
				{"endpoints", list[netip.AddrPort]{&v.Endpoints}}, {"home_relay", &v.HomeRelay},
				{"routes", list[netip.Prefix]{&v.Routes}}, {"ephemeral", &v.Ephemeral},
				{"last_seen", nanos{&v.LastSeen}}, {"key_expiry", nanos{&v.KeyExpiry}},
				{"created_at", nanos{&v.CreatedAt}}, {"rotate_requested_at", nanos{&v.RotateRequestedAt}},
			}
		}, func(v *model.Node) string { return strconv.Quote(v.Name) }),

		keys: newKind(d, "enrollment key", "enrollment_keys", "created_at, id", func(v *model.EnrollmentKey) []column {
			return []column{
				{"id", &v.ID}, {"tenant_id", &v.TenantID}, {"network_id", &v.NetworkID},
				{"description", &v.Description}, {"tags", list[string]{&v.Tags}},
				{"reusable", &v.Reusable}, {"max_uses", &v.MaxUses}, {"uses", &v.Uses},
				{"ephemeral", &v.Ephemeral}, {"expires_at", nanos{&v.ExpiresAt}}, {"hash", &v.Hash},
				{"created_at", nanos{&v.CreatedAt}}, {"created_by", &v.CreatedBy},
			}
		}, func(v *model.EnrollmentKey) string { return byID(&v.ID) }),

		tokens: newKind(d, "token", "tokens", "created_at, id", func(v *model.Token) []column {
			return []column{
				{"id", &v.ID}, {"tenant_id", nullable{&v.TenantID}}, {"role", str[model.Role]{&v.Role}},
				{"description", &v.Description}, {"expires_at", nanos{&v.ExpiresAt}}, {"hash", &v.Hash},
				{"created_at", nanos{&v.CreatedAt}}, {"created_by", &v.CreatedBy},
			}
		}, func(v *model.Token) string { return byID(&v.ID) }),

		relays: newKind(d, "relay", "relays", "name", func(v *model.Relay) []column {
			return []column{
				{"id", &v.ID}, {"name", &v.Name}, {"region", &v.Region},
				{"public_addr", text{&v.PublicAddr}}, {"udp_port_min", &v.UDPPortMin},
				{"udp_port_max", &v.UDPPortMax}, {"stun_port", &v.STUNPort}, {"tls_url", &v.TLSURL},
				{"ws_url", &v.WSURL}, {"relay_key", text{&v.RelayKey}}, {"created_at", nanos{&v.CreatedAt}},
			}
		}, func(v *model.Relay) string { return strconv.Quote(v.Name) }),

		sites: newKind(d, "IPsec site", "ipsec_sites", "name, id", func(v *model.IPsecSite) []column {
			return []column{
				{"id", &v.ID}, {"tenant_id", &v.TenantID}, {"name", &v.Name},
				{"vrouter_node_id", &v.VRouterNodeID}, {"remote_addr", &v.RemoteAddr},
				{"local_id", &v.LocalID}, {"remote_id", &v.RemoteID}, {"auth_method", &v.AuthMethod},
				{"psk", &v.PSK}, {"certificate", &v.Certificate},
				{"ike_proposals", list[string]{&v.IKEProposals}}, {"esp_proposals", list[string]{&v.ESPProposals}},
				{"local_subnets", list[netip.Prefix]{&v.LocalSubnets}},
				{"remote_subnets", list[netip.Prefix]{&v.RemoteSubnets}}, {"created_at", nanos{&v.CreatedAt}},
			}
		}, func(v *model.IPsecSite) string { return strconv.Quote(v.Name) }),

		// Policies and audit entries are only inserted and selected; their first
		// column is not a unique key, and update/delete are never used.
		policies: newKind(d, "policy", "policies", "tenant_id", func(v *model.Policy) []column {
			return []column{
				{"tenant_id", &v.TenantID}, {"version", &v.Version}, {"document", &v.Document},
				{"created_at", nanos{&v.CreatedAt}}, {"created_by", &v.CreatedBy},
			}
		}, func(v *model.Policy) string { return fmt.Sprintf("version %d for tenant %s", v.Version, v.TenantID) }),

		audit: newKind(d, "audit entry", "audit_log", "id DESC", func(v *model.AuditEntry) []column {
			return []column{
				{"id", &v.ID}, {"at", nanos{&v.At}}, {"actor", &v.Actor}, {"tenant_id", &v.TenantID},
				{"action", &v.Action}, {"kind", &v.Kind}, {"object_id", &v.ObjectID}, {"detail", &v.Detail},
			}
		}, func(v *model.AuditEntry) string { return byID(&v.ID) }),
	}
}

// tx is a store.Tx. The first statement that fails ends it: PostgreSQL refuses
// every later statement of an aborted transaction, and SQLite is made to behave
// the same, so that a caller who ignores an error can never commit half of fn.
type tx struct {
	k        *kinds
	d        *dialect
	sql      *sql.Tx
	prepared map[string]*sql.Stmt // the store's prepared writes (SQLite only)
	stmts    map[string]*sql.Stmt // those of prepared bound to this transaction
	failed   error                // the first statement error, if any
}

var _ store.Tx = (*tx)(nil)

func (x *tx) Tenants() store.Table[model.Tenant]   { return table[model.Tenant]{x, x.k.tenants} }
func (x *tx) Networks() store.Table[model.Network] { return table[model.Network]{x, x.k.networks} }
func (x *tx) Nodes() store.Table[model.Node]       { return table[model.Node]{x, x.k.nodes} }
func (x *tx) EnrollmentKeys() store.Table[model.EnrollmentKey] {
	return table[model.EnrollmentKey]{x, x.k.keys}
}
func (x *tx) Tokens() store.Table[model.Token]    { return table[model.Token]{x, x.k.tokens} }
func (x *tx) Relays() store.Table[model.Relay]    { return table[model.Relay]{x, x.k.relays} }
func (x *tx) Sites() store.Table[model.IPsecSite] { return table[model.IPsecSite]{x, x.k.sites} }

func (x *tx) AddPolicy(ctx context.Context, p *model.Policy) error {
	return insert(ctx, x, x.k.policies, p)
}

func (x *tx) Audit(ctx context.Context, e *model.AuditEntry) error {
	if e.ID == "" {
		return errors.New("appending audit entry: empty ID (use model.NewAuditID)")
	}
	return insert(ctx, x, x.k.audit, e)
}

// exec runs one write. With mustHit, a statement that touched no row is
// store.ErrNotFound.
func (x *tx) exec(ctx context.Context, doing, query string, args []any, mustHit bool) error {
	if x.failed != nil {
		return fmt.Errorf("%s: transaction already failed: %w", doing, x.failed)
	}
	var res sql.Result
	var err error
	if ps := x.prepared[query]; ps != nil {
		st := x.stmts[query]
		if st == nil {
			if x.stmts == nil {
				x.stmts = map[string]*sql.Stmt{}
			}
			st = x.sql.StmtContext(ctx, ps)
			x.stmts[query] = st
		}
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = x.sql.ExecContext(ctx, query, args...)
	}
	if err != nil {
		x.failed = x.d.wrap(doing, err)
		return x.failed
	}
	if !mustHit {
		return nil
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", doing, store.ErrNotFound)
	}
	return nil
}

func insert[T any](ctx context.Context, x *tx, k *kind[T], v *T) error {
	doing := "inserting " + k.noun + " " + k.ref(v)
	args, err := k.values(v)
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	return x.exec(ctx, doing, k.insert, args, false)
}

// table is a store.Table over one kind, inside one transaction.
type table[T any] struct {
	x *tx
	k *kind[T]
}

func (t table[T]) Insert(ctx context.Context, v *T) error {
	if t.k.id(v) == "" {
		return fmt.Errorf("inserting %s %s: empty ID", t.k.noun, t.k.ref(v))
	}
	return insert(ctx, t.x, t.k, v)
}

func (t table[T]) Update(ctx context.Context, v *T) error {
	doing := "updating " + t.k.noun + " " + t.k.ref(v)
	if id := t.k.id(v); t.k.ref(v) != id {
		doing += " (" + id + ")"
	}
	args, err := t.k.values(v)
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	// SET every column but the key, then WHERE key = ?.
	return t.x.exec(ctx, doing, t.k.update, append(args[1:], args[0]), true)
}

func (t table[T]) Delete(ctx context.Context, id string) error {
	return t.x.exec(ctx, "deleting "+t.k.noun+" "+id, t.k.delete, []any{id}, true)
}
