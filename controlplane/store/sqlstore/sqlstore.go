// Package sqlstore is the controller's durable store: one implementation of
// store.Store over database/sql that serves both SQLite (modernc.org/sqlite, pure
// Go, for a single controller) and PostgreSQL (pgx, for several controllers sharing
// one database). The schema is one set of portable, versioned, append-only goose
// migrations embedded in the binary and applied by Open; the two dialects differ
// only in placeholders and in how constraint violations are reported (dialect.go).
//
// It persists and loads; it must never decide policy (whether a change is allowed
// is the caller's job — the store only refuses what its constraints forbid), never
// be read on a request's hot path, and never change or reorder a migration that
// has been released: new schema is a new migration file.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// Drivers.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Config says which database to open.
type Config struct {
	Driver string // SQLite or Postgres
	// DSN is, for SQLite, the path of the database file (created if missing); for
	// PostgreSQL, a URL such as postgres://user@host:5432/cvlan?sslmode=verify-full.
	DSN string
	// MaxConns bounds the connection pool (for SQLite, the pool of readers; there
	// is always exactly one writer). 0 means a default.
	MaxConns int
	// Logger, if set, receives a line per migration applied.
	Logger *slog.Logger
}

// Validate reports the first field of c that is wrong.
func (c *Config) Validate() error {
	switch c.Driver {
	case SQLite, Postgres:
	default:
		return fmt.Errorf("sqlstore: driver %q is not %s or %s", c.Driver, SQLite, Postgres)
	}
	switch {
	case c.DSN == "":
		return fmt.Errorf("sqlstore: DSN is empty; want a %s", map[string]string{SQLite: "file path", Postgres: "postgres:// URL"}[c.Driver])
	case c.Driver == SQLite && (c.DSN == ":memory:" || strings.HasPrefix(c.DSN, "file:")):
		return fmt.Errorf("sqlstore: sqlite DSN %q is not a file path (in-memory databases and URIs are not supported)", c.DSN)
	case c.MaxConns < 0:
		return fmt.Errorf("sqlstore: MaxConns %d is negative", c.MaxConns)
	}
	return nil
}

//go:embed migrations/*.sql
var migrations embed.FS

// defaultSQLiteReaders is the SQLite reader pool size when MaxConns is 0.
const defaultSQLiteReaders = 4

// Store is a store.Store on SQLite or PostgreSQL. Its methods are safe for
// concurrent use.
type Store struct {
	d *dialect
	k *kinds
	// w runs transactions and migrations; r runs reads. For SQLite, w has exactly
	// one connection, so writers queue in Go instead of failing with SQLITE_BUSY,
	// and r is a separate pool of read-only connections that WAL lets run beside
	// the writer. For PostgreSQL both are the same pool.
	w, r     *sql.DB
	pool     *pgxpool.Pool // PostgreSQL only
	migrator *goose.Provider
	// prepared holds every write statement, prepared once on SQLite's single
	// writer connection (modernc.org/sqlite has no statement cache, and parsing
	// is a third of an insert). pgx caches statements itself; nil there.
	prepared map[string]*sql.Stmt

	listNodes, policyVersions, latestPolicies string

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

var errClosed = errors.New("sqlstore: store is closed")

// Open connects to the database described by cfg and applies every migration it
// has not seen yet. Concurrent Opens of one PostgreSQL database take turns
// migrating (a session advisory lock).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{}
	var err error
	if cfg.Driver == SQLite {
		err = s.openSQLite(ctx, cfg)
	} else {
		err = s.openPostgres(ctx, cfg)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	if s.migrator, err = newMigrator(s.d, s.w); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlstore: reading migrations: %w", err)
	}
	applied, err := s.migrator.Up(ctx)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlstore: migrating %s database: %w", s.d.name, err)
	}
	if cfg.Logger != nil {
		for _, m := range applied {
			cfg.Logger.Info("sqlstore: applied migration", "driver", s.d.name, "version", m.Source.Version,
				"file", path.Base(m.Source.Path), "duration", m.Duration)
		}
	}
	s.k = newKinds(s.d)
	if s.d == sqliteDialect {
		s.prepared = map[string]*sql.Stmt{}
		for _, q := range s.k.writes() {
			st, err := s.w.PrepareContext(ctx, q)
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("sqlstore: preparing %q: %w", q, err)
			}
			s.prepared[q] = st
		}
	}
	s.listNodes = s.d.rebind(s.k.nodes.sel + " WHERE tenant_id = ? AND name > ? ORDER BY name LIMIT ?")
	s.policyVersions = s.d.rebind(s.k.policies.sel + " WHERE tenant_id = ? ORDER BY version DESC LIMIT ?")
	s.latestPolicies = s.k.policies.sel +
		" WHERE version = (SELECT MAX(p.version) FROM policies p WHERE p.tenant_id = policies.tenant_id)" +
		" ORDER BY tenant_id"
	return s, nil
}

func (s *Store) openSQLite(ctx context.Context, cfg Config) error {
	s.d = sqliteDialect
	var err error
	if s.w, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, true)); err != nil {
		return fmt.Errorf("sqlstore: opening sqlite database %s: %w", cfg.DSN, err)
	}
	s.w.SetMaxOpenConns(1)
	// Connecting now creates the file and switches it to WAL before any reader
	// opens it.
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlstore: opening sqlite database %s: %w", cfg.DSN, err)
	}
	if s.r, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, false)); err != nil {
		return fmt.Errorf("sqlstore: opening sqlite database %s for reading: %w", cfg.DSN, err)
	}
	n := cfg.MaxConns
	if n == 0 {
		n = defaultSQLiteReaders
	}
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	return nil
}

func (s *Store) openPostgres(ctx context.Context, cfg Config) error {
	s.d = postgresDialect
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return fmt.Errorf("sqlstore: postgres DSN: %w", err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = int32(min(cfg.MaxConns, 1<<16))
	}
	if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return fmt.Errorf("sqlstore: connecting to postgres: %w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("sqlstore: connecting to postgres at %s:%d/%s: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database, err)
	}
	s.w = stdlib.OpenDBFromPool(s.pool)
	s.r = s.w
	return nil
}

// newMigrator is the goose provider for the embedded migrations.
func newMigrator(d *dialect, db *sql.DB) (*goose.Provider, error) {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if d == postgresDialect {
		l, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(l))
	}
	return goose.NewProvider(d.goose, db, fsys, opts...)
}

// Update runs fn in one transaction and commits if fn returns nil. fn's error is
// returned as is. If a statement inside fn failed, nothing is committed even if fn
// then returns nil: Update returns that statement's error. fn must not call
// Update, and the Tx must not be used after fn returns.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.closed.Load() {
		return errClosed
	}
	sqlTx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: beginning transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			sqlTx.Rollback()
		}
	}()
	x := &tx{k: s.k, d: s.d, sql: sqlTx, prepared: s.prepared}
	if err := fn(x); err != nil {
		return err
	}
	if x.failed != nil {
		return fmt.Errorf("sqlstore: not committing: %w", x.failed)
	}
	if err := sqlTx.Commit(); err != nil {
		return s.d.wrap("sqlstore: committing", err)
	}
	committed = true
	return nil
}

// Load reads everything, from one consistent snapshot. Tenants and relays are
// ordered by name; networks and sites by name then ID; nodes by tenant then name;
// enrollment keys and tokens by creation time; policies (the latest version of
// each tenant's) by tenant. Every slice is non-nil.
func (s *Store) Load(ctx context.Context) (*store.Dump, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	rtx, err := s.r.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: loading: %w", err)
	}
	defer rtx.Rollback()
	var d store.Dump
	k := s.k
	loadAll(ctx, rtx, k.tenants, k.tenants.load, &d.Tenants, &err)
	loadAll(ctx, rtx, k.networks, k.networks.load, &d.Networks, &err)
	loadAll(ctx, rtx, k.nodes, k.nodes.load, &d.Nodes, &err)
	loadAll(ctx, rtx, k.keys, k.keys.load, &d.EnrollmentKeys, &err)
	loadAll(ctx, rtx, k.tokens, k.tokens.load, &d.Tokens, &err)
	loadAll(ctx, rtx, k.relays, k.relays.load, &d.Relays, &err)
	loadAll(ctx, rtx, k.sites, k.sites.load, &d.Sites, &err)
	loadAll(ctx, rtx, k.policies, s.latestPolicies, &d.Policies, &err)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: loading: %w", err)
	}
	return &d, nil
}

// Page sizes of ListNodes, PolicyVersions and AuditLog: a limit of 0 or less
// means DefaultLimit, and no call returns more than MaxLimit rows.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

func clamp(limit int) int {
	if limit <= 0 {
		return DefaultLimit
	}
	return min(limit, MaxLimit)
}

// ListNodes returns up to limit (see MaxLimit) of a tenant's nodes whose names
// sort after after, ordered by name. The result is non-nil.
func (s *Store) ListNodes(ctx context.Context, tenantID, after string, limit int) ([]model.Node, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	nodes, err := query(ctx, s.r, s.k.nodes, s.listNodes, tenantID, after, clamp(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: listing nodes of tenant %s: %w", tenantID, err)
	}
	return nodes, nil
}

// PolicyVersions returns up to limit (see MaxLimit) of a tenant's policy versions,
// newest first.
func (s *Store) PolicyVersions(ctx context.Context, tenantID string, limit int) ([]model.Policy, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	ps, err := query(ctx, s.r, s.k.policies, s.policyVersions, tenantID, clamp(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: listing policy versions of tenant %s: %w", tenantID, err)
	}
	return ps, nil
}

// AuditLog returns up to q.Limit (see MaxLimit) entries, newest first: those of
// q.TenantID if it is set, with IDs before q.Before if it is set.
func (s *Store) AuditLog(ctx context.Context, q store.AuditQuery) ([]model.AuditEntry, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	var where []string
	var args []any
	if q.TenantID != "" {
		where, args = append(where, "tenant_id = ?"), append(args, q.TenantID)
	}
	if q.Before != "" {
		where, args = append(where, "id < ?"), append(args, q.Before)
	}
	sel := s.k.audit.sel
	if len(where) > 0 {
		sel += " WHERE " + strings.Join(where, " AND ")
	}
	sel += " ORDER BY id DESC LIMIT ?"
	args = append(args, clamp(q.Limit))
	es, err := query(ctx, s.r, s.k.audit, s.d.rebind(sel), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: reading audit log: %w", err)
	}
	return es, nil
}

// SchemaVersion is the newest migration applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	v, err := s.migrator.GetDBVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: reading schema version: %w", err)
	}
	return v, nil
}

// Close closes the connection pools. Calls in flight finish first; every later
// call returns an error.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		var errs []error
		for _, st := range s.prepared {
			errs = append(errs, st.Close())
		}
		if s.r != nil && s.r != s.w {
			errs = append(errs, s.r.Close())
		}
		if s.w != nil {
			errs = append(errs, s.w.Close())
		}
		if s.pool != nil {
			s.pool.Close()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
