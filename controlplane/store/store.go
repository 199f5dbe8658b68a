// Package store is the controller's durable storage contract: one Store interface
// that the SQLite and PostgreSQL implementations (package sqlstore) both satisfy and
// that one conformance suite (package storetest) checks. The store persists; it is
// never read on the request path (package state keeps the in-memory snapshot), and it
// never decides whether a change is allowed — it only refuses what its constraints
// forbid (duplicate names, duplicate addresses, dangling references).
package store

import (
	"context"
	"errors"

	"github.com/cvlan/cvlan/controlplane/model"
)

// Sentinel errors; implementations wrap them with what was being done.
var (
	// ErrNotFound: Update or Delete named a row that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a uniqueness or foreign-key constraint refused the change.
	ErrConflict = errors.New("conflict")
)

// Table writes one kind of object. Rows are keyed by the object's ID.
type Table[T any] interface {
	// Insert adds a new row; ErrConflict if the ID, a unique name or address is taken
	// or a referenced row is missing.
	Insert(ctx context.Context, v *T) error
	// Update replaces the row with v's ID; ErrNotFound if there is none.
	Update(ctx context.Context, v *T) error
	// Delete removes the row; ErrNotFound if there is none, ErrConflict if other
	// rows still reference it.
	Delete(ctx context.Context, id string) error
}

// Tx is one transaction: everything done through it commits together or not at all.
type Tx interface {
	Tenants() Table[model.Tenant]
	Networks() Table[model.Network]
	Nodes() Table[model.Node]
	EnrollmentKeys() Table[model.EnrollmentKey]
	Tokens() Table[model.Token]
	Relays() Table[model.Relay]
	Sites() Table[model.IPsecSite]
	// AddPolicy stores a new version of a tenant's policy; ErrConflict if that
	// version exists. An empty document records that the policy was deleted.
	AddPolicy(ctx context.Context, p *model.Policy) error
	// Audit appends to the audit log.
	Audit(ctx context.Context, e *model.AuditEntry) error
}

// Dump is the whole persisted state, loaded once at start.
type Dump struct {
	Tenants        []model.Tenant
	Networks       []model.Network
	Nodes          []model.Node
	EnrollmentKeys []model.EnrollmentKey
	Tokens         []model.Token
	Relays         []model.Relay
	Sites          []model.IPsecSite
	Policies       []model.Policy // the latest version per tenant
}

// AuditQuery selects audit entries, newest first.
type AuditQuery struct {
	TenantID string // "" = all tenants
	Before   string // entry ID to page from; "" = newest
	Limit    int
}

// Store is the durable state of one controller (or of several sharing PostgreSQL).
// Methods are safe for concurrent use. After Close every method returns an error.
type Store interface {
	// Update runs fn in a transaction and commits if fn returns nil. If fn or the
	// commit fails, nothing fn did is kept.
	Update(ctx context.Context, fn func(Tx) error) error
	// Load reads everything.
	Load(ctx context.Context) (*Dump, error)
	// ListNodes pages through a tenant's nodes ordered by name, after the given name.
	ListNodes(ctx context.Context, tenantID, after string, limit int) ([]model.Node, error)
	// PolicyVersions returns a tenant's policy versions, newest first.
	PolicyVersions(ctx context.Context, tenantID string, limit int) ([]model.Policy, error)
	// AuditLog returns audit entries, newest first.
	AuditLog(ctx context.Context, q AuditQuery) ([]model.AuditEntry, error)
	// SchemaVersion is the newest migration applied.
	SchemaVersion(ctx context.Context) (int64, error)
	Close() error
}
