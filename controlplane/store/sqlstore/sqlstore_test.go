package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
	"github.com/cvlan/cvlan/controlplane/store/storetest"
)

// backends are the databases every test runs against. need skips (or fails) the
// test when the backend is not there.
var backends = []struct {
	name string
	need func(tb testing.TB)
	open func(tb testing.TB) *Store
}{
	{SQLite, func(testing.TB) {}, openSQLite},
	{Postgres, func(tb testing.TB) { postgresAdminDSN(tb) }, openPostgres},
}

func TestConformance(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			b.need(t)
			storetest.Run(t, func(t *testing.T) store.Store { return b.open(t) })
		})
	}
}

// openSQLite opens a new store in a fresh file.
func openSQLite(tb testing.TB) *Store {
	return mustOpen(tb, Config{Driver: SQLite, DSN: filepath.Join(tb.TempDir(), "cvlan.db")})
}

// openPostgres opens a new store in a fresh database of the cluster named by
// CVLAN_TEST_POSTGRES_DSN, dropped when tb ends. Without that cluster it skips,
// unless CVLAN_REQUIRE_PRIVILEGED says every test must really run.
func openPostgres(tb testing.TB) *Store {
	return mustOpen(tb, Config{Driver: Postgres, DSN: freshPostgresDB(tb), MaxConns: 8})
}

func mustOpen(tb testing.TB, cfg Config) *Store {
	tb.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// postgresAdminDSN is the URL of the throwaway test cluster.
func postgresAdminDSN(tb testing.TB) string {
	tb.Helper()
	admin := os.Getenv("CVLAN_TEST_POSTGRES_DSN")
	if admin == "" {
		if os.Getenv("CVLAN_REQUIRE_PRIVILEGED") != "" {
			tb.Fatal("CVLAN_TEST_POSTGRES_DSN unset but CVLAN_REQUIRE_PRIVILEGED is set")
		}
		tb.Skip("CVLAN_TEST_POSTGRES_DSN unset; skipping PostgreSQL (make test starts a throwaway cluster)")
	}
	return admin
}

// freshPostgresDB creates an empty database and returns its URL.
func freshPostgresDB(tb testing.TB) string {
	tb.Helper()
	admin := postgresAdminDSN(tb)
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("CVLAN_TEST_POSTGRES_DSN is not a postgres:// URL (err %v)", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "cvlan_test_" + hex.EncodeToString(b)
	ctx := context.Background()
	exec := func(q string) {
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Fatalf("connecting to CVLAN_TEST_POSTGRES_DSN: %v", err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, q); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
	exec("CREATE DATABASE " + name)
	tb.Cleanup(func() { exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)") })
	u.Path = "/" + name
	return u.String()
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string // in the error; "" = valid
	}{
		{Config{Driver: SQLite, DSN: "/var/lib/cvlan/cvlan.db"}, ""},
		{Config{Driver: Postgres, DSN: "postgres://cvlan@db/cvlan", MaxConns: 20}, ""},
		{Config{Driver: "mysql", DSN: "x"}, `driver "mysql" is not sqlite or postgres`},
		{Config{Driver: "", DSN: "x"}, `driver "" is not`},
		{Config{Driver: SQLite}, "DSN is empty; want a file path"},
		{Config{Driver: Postgres}, "DSN is empty; want a postgres:// URL"},
		{Config{Driver: SQLite, DSN: ":memory:"}, "not a file path"},
		{Config{Driver: SQLite, DSN: "file:x.db?mode=ro"}, "not a file path"},
		{Config{Driver: SQLite, DSN: "x.db", MaxConns: -1}, "MaxConns -1 is negative"},
	} {
		err := tt.cfg.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v", tt.cfg, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: got %v, want an error containing %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := Open(t.Context(), Config{Driver: "mysql"}); err == nil {
		t.Error("Open accepted an invalid config")
	}
}

// TestOpenErrors: a database that cannot be reached fails Open, saying which.
func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := Open(ctx, Config{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "missing-dir", "x.db")}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
	_, err := Open(ctx, Config{Driver: Postgres, DSN: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"})
	if err == nil || !strings.Contains(err.Error(), "connecting to postgres") {
		t.Errorf("Open of an unreachable postgres = %v", err)
	}
}

// TestSQLitePathNeedsNoEscaping: characters that mean something in a URI are
// just part of the file name.
func TestSQLitePathNeedsNoEscaping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd ?name#%41.db")
	s := mustOpen(t, Config{Driver: SQLite, DSN: path})
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.Tenants().Insert(t.Context(), &model.Tenant{ID: "tn_1", Name: "a"})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at the path given: %v", err)
	}
}

// TestMigrateOldDatabase: a database made by an older binary (only migration 1)
// with data in it is brought up to date by Open, and keeps its data.
func TestMigrateOldDatabase(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			b.need(t)
			cfg := Config{Driver: SQLite, DSN: filepath.Join(t.TempDir(), "old.db")}
			d := sqliteDialect
			if b.name == Postgres {
				cfg = Config{Driver: Postgres, DSN: freshPostgresDB(t)}
				d = postgresDialect
			}
			ctx := t.Context()
			var db *sql.DB
			var err error
			if b.name == SQLite {
				db, err = sql.Open("sqlite", sqliteDSN(cfg.DSN, true))
			} else {
				db, err = sql.Open("pgx", cfg.DSN)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			m, err := newMigrator(d, db)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.UpTo(ctx, 1); err != nil {
				t.Fatalf("migrating to version 1: %v", err)
			}
			if _, err := db.ExecContext(ctx, d.rebind(`INSERT INTO tenants (id, name, description, created_at) VALUES (?, ?, ?, ?)`),
				"tn_old", "old", "from version 1", int64(1700000000123456789)); err != nil {
				t.Fatalf("inserting into a version 1 database: %v", err)
			}
			db.Close()

			s := mustOpen(t, cfg)
			v, err := s.SchemaVersion(ctx)
			if err != nil || v < 2 {
				t.Fatalf("SchemaVersion after Open = %d, %v; want the latest", v, err)
			}
			dump, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := model.Tenant{ID: "tn_old", Name: "old", Description: "from version 1", CreatedAt: time.Unix(0, 1700000000123456789).UTC()}
			if len(dump.Tenants) != 1 || dump.Tenants[0] != want {
				t.Errorf("Load().Tenants = %+v, want [%+v]", dump.Tenants, want)
			}
			// And the newer tables work.
			e := model.AuditEntry{ID: model.NewAuditID(time.Now().UnixNano()), At: time.Now(), TenantID: "tn_old", Action: model.ActionCreate}
			if err := s.Update(ctx, func(tx store.Tx) error { return tx.Audit(ctx, &e) }); err != nil {
				t.Errorf("Audit on a migrated database: %v", err)
			}
		})
	}
}

// TestTimeOutOfRange: times the store cannot keep exactly are refused, not
// silently changed.
func TestTimeOutOfRange(t *testing.T) {
	s := openSQLite(t)
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.Tenants().Insert(t.Context(), &model.Tenant{ID: "tn_1", Name: "a", CreatedAt: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)})
	})
	if err == nil || errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "created_at") {
		t.Errorf("insert with a year 9999 time = %v", err)
	}
}
