package sqlstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/cvlan/cvlan/controlplane/store"
)

// dialect holds everything that differs between SQLite and PostgreSQL once both
// are behind database/sql: placeholders and how constraint violations look.
// The schema and every query are otherwise shared.
type dialect struct {
	name     string
	goose    goose.Dialect
	numbered bool // placeholders are $1, $2, … rather than ?
	// constraint reports whether err is a unique or foreign-key violation.
	constraint func(err error) bool
}

var (
	sqliteDialect = &dialect{
		name:  "sqlite",
		goose: goose.DialectSQLite3,
		constraint: func(err error) bool {
			var e *sqlite.Error
			if !errors.As(err, &e) {
				return false
			}
			switch e.Code() {
			case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY,
				// ON DELETE RESTRICT fails through SQLite's internal trigger code
				// (the schema has no triggers of its own).
				sqlite3.SQLITE_CONSTRAINT_TRIGGER:
				return true
			}
			return false
		},
	}
	postgresDialect = &dialect{
		name:     "postgres",
		goose:    goose.DialectPostgres,
		numbered: true,
		constraint: func(err error) bool {
			var e *pgconn.PgError
			return errors.As(err, &e) && (e.Code == "23505" || e.Code == "23503") // unique_violation, foreign_key_violation
		},
	}
)

// rebind rewrites the ? placeholders of q for d. Queries in this package never
// contain a literal '?'.
func (d *dialect) rebind(q string) string {
	if !d.numbered {
		return q
	}
	var b strings.Builder
	n := 0
	for {
		i := strings.IndexByte(q, '?')
		if i < 0 {
			b.WriteString(q)
			return b.String()
		}
		n++
		b.WriteString(q[:i])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
		q = q[i+1:]
	}
}

// wrap says what was being done when err happened, and marks constraint violations
// with store.ErrConflict (keeping the driver's error, which names the constraint).
func (d *dialect) wrap(doing string, err error) error {
	if d.constraint(err) {
		return fmt.Errorf("%s: %w: %w", doing, store.ErrConflict, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// sqliteDSN is the modernc.org/sqlite DSN for the database file at path. Writers
// take the write lock when they begin (so they queue on busy_timeout instead of
// failing to upgrade a read lock); readers cannot write at all.
func sqliteDSN(path string, write bool) string {
	// SQLite URIs decode %XX in the path and end it at '?' or '#'.
	path = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	if write {
		return dsn + "&_pragma=journal_mode(WAL)&_txlock=immediate"
	}
	return dsn + "&_pragma=query_only(1)"
}
