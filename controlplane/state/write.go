package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// State owns the current World and is its only writer.
type State struct {
	mu    sync.Mutex // held by the one writer
	world atomic.Pointer[World]
	st    store.Store
	now   func() time.Time
	// watchers get every committed batch of changes, in commit order.
	watchers    []func(*World, Changes)
	checkPolicy func(t *Tenant, document string) error
}

// Changes is what one committed write changed that watchers care about.
type Changes struct {
	Nodes []NodeChange
	// Policies are the tenants whose policy document changed (set or deleted).
	Policies []string
	// Networks are networks changed in place (name, MTU), as they are now.
	Networks []*model.Network
	// Relays says the relay list changed (one added, changed or removed).
	Relays bool
}

// NodeChange is one node added (Old nil), changed, or removed (New nil).
type NodeChange struct {
	Old, New *model.Node
}

// Node is the node the change is about, whichever of Old and New is set.
func (c NodeChange) Node() *model.Node {
	if c.New != nil {
		return c.New
	}
	return c.Old
}

// Watch registers fn to be called with the new World and its changes after every
// write that changed nodes, a policy, a network or a relay, after that World is published, in commit
// order. fn runs on the writer's goroutine while it holds the write lock: it must
// be quick, must not block and must not write to the State.
func (s *State) Watch(fn func(*World, Changes)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
}

// Options tune a State.
type Options struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// CheckPolicy, when set, vets a tenant's new policy document against the
	// tenant as it will be (its nodes, tags, addresses); an error refuses the
	// document and the old policy stays in force.
	CheckPolicy func(t *Tenant, document string) error
}

// Open loads the store into memory.
func Open(ctx context.Context, st store.Store, opts Options) (*State, error) {
	d, err := st.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("loading state: %w", err)
	}
	s := &State{st: st, now: opts.Now, checkPolicy: opts.CheckPolicy}
	if s.now == nil {
		s.now = time.Now
	}
	s.world.Store(build(d))
	return s, nil
}

// World returns the current snapshot. It never blocks and never changes.
func (s *State) World() *World { return s.world.Load() }

// Store returns the store behind the state, for reads that are not state (audit).
func (s *State) Store() store.Store { return s.st }

// Now is the state's clock.
func (s *State) Now() time.Time { return s.now() }

// Actor names who makes a change in the audit log: a token ID, "init", "node:<id>".
type Actor string

// txn is one change being built: a copy-on-write World and the store operations and
// audit entries that persist it.
type txn struct {
	w        *World
	copied   map[string]*Tenant
	ops      []func(context.Context, store.Tx) error
	nodes    []NodeChange
	policies []string
	networks []*model.Network
	relays   bool
	actor    Actor
	now      time.Time
}

// write runs fn as the one writer; if fn succeeds and the store commits, the new
// World is published. Otherwise nothing changes.
func (s *State) write(ctx context.Context, actor Actor, fn func(*txn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.world.Load()
	w := *old
	tx := &txn{w: &w, copied: map[string]*Tenant{}, actor: actor, now: s.now().UTC()}
	if err := fn(tx); err != nil {
		return err
	}
	err := s.st.Update(ctx, func(stx store.Tx) error {
		for _, op := range tx.ops {
			if err := op(ctx, stx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return storeError(err)
	}
	s.world.Store(tx.w)
	if len(tx.nodes) > 0 || len(tx.policies) > 0 || len(tx.networks) > 0 || tx.relays {
		for _, fn := range s.watchers {
			fn(tx.w, Changes{Nodes: tx.nodes, Policies: tx.policies, Networks: tx.networks, Relays: tx.relays})
		}
	}
	return nil
}

func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrConflict):
		return model.Errorf(model.Conflict, "", "refused by the database: %v", err)
	case errors.Is(err, store.ErrNotFound):
		return model.Errorf(model.NotFound, "", "%v", err)
	}
	return fmt.Errorf("persisting change: %w", err)
}

// tenant returns a writable copy of the tenant's snapshot, or nil.
func (tx *txn) tenant(id string) *Tenant {
	if t, ok := tx.copied[id]; ok {
		return t
	}
	old := tx.w.tenants[id]
	if old == nil {
		return nil
	}
	if len(tx.copied) == 0 {
		tx.w.tenants = maps.Clone(tx.w.tenants)
	}
	c := *old
	c.addrs = maps.Clone(old.addrs)
	c.next = maps.Clone(old.next)
	tx.w.tenants[id] = &c
	tx.copied[id] = &c
	return &c
}

// tenantOr404 is tenant, with an error when the tenant is gone.
func (tx *txn) tenantOr404(id string) (*Tenant, error) {
	if t := tx.tenant(id); t != nil {
		return t, nil
	}
	return nil, model.NotFoundf("tenant", id)
}

// setAddrs records that node holds addrs (and releases free) in network netID of t.
func (t *Tenant) setAddrs(netID, nodeID string, hold, free []netip.Addr) {
	m := maps.Clone(t.addrs[netID])
	if m == nil {
		m = map[netip.Addr]string{}
	}
	for _, a := range free {
		if a.IsValid() {
			delete(m, a)
		}
	}
	for _, a := range hold {
		if a.IsValid() {
			m[a] = nodeID
		}
	}
	t.addrs[netID] = m
}

// op queues a store operation.
func (tx *txn) op(f func(context.Context, store.Tx) error) { tx.ops = append(tx.ops, f) }

// audit queues an audit entry.
func (tx *txn) audit(tenantID, action, kind, objectID, detail string) {
	e := &model.AuditEntry{
		ID:       model.NewAuditID(tx.now.UnixNano() + int64(len(tx.ops))),
		At:       tx.now,
		Actor:    string(tx.actor),
		TenantID: tenantID,
		Action:   action,
		Kind:     kind,
		ObjectID: objectID,
		Detail:   detail,
	}
	tx.op(func(ctx context.Context, stx store.Tx) error { return stx.Audit(ctx, e) })
}

// insert, update and remove queue a row change and its audit entry.
func insert[T any](tx *txn, tbl func(store.Tx) store.Table[T], v *T, tenantID, kind, id, detail string) {
	tx.op(func(ctx context.Context, stx store.Tx) error { return tbl(stx).Insert(ctx, v) })
	tx.audit(tenantID, model.ActionCreate, kind, id, detail)
}

func update[T any](tx *txn, tbl func(store.Tx) store.Table[T], v *T, tenantID, kind, id, detail string) {
	tx.op(func(ctx context.Context, stx store.Tx) error { return tbl(stx).Update(ctx, v) })
	tx.audit(tenantID, model.ActionUpdate, kind, id, detail)
}

func remove[T any](tx *txn, tbl func(store.Tx) store.Table[T], tenantID, kind, id, detail string) {
	tx.op(func(ctx context.Context, stx store.Tx) error { return tbl(stx).Delete(ctx, id) })
	tx.audit(tenantID, model.ActionDelete, kind, id, detail)
}

// Table selectors, so callers name a table without a closure each time.
func tenantsT(tx store.Tx) store.Table[model.Tenant]     { return tx.Tenants() }
func networksT(tx store.Tx) store.Table[model.Network]   { return tx.Networks() }
func nodesT(tx store.Tx) store.Table[model.Node]         { return tx.Nodes() }
func keysT(tx store.Tx) store.Table[model.EnrollmentKey] { return tx.EnrollmentKeys() }
func tokensT(tx store.Tx) store.Table[model.Token]       { return tx.Tokens() }
func relaysT(tx store.Tx) store.Table[model.Relay]       { return tx.Relays() }
func sitesT(tx store.Tx) store.Table[model.IPsecSite]    { return tx.Sites() }
