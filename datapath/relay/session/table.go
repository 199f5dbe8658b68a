package session

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// ErrNoChanges is returned by [Table.Diff] when the table already holds exactly the
// desired sessions.
var ErrNoChanges = errors.New("no changes")

// Table holds the relay's sessions, by id and by port. Lookups are safe for
// concurrent use; changes go through [Table.Diff] and [Table.Apply] and must come from
// one goroutine at a time (the relay's control path).
type Table struct {
	mu     sync.RWMutex
	byID   map[ID]*Session
	byPort map[uint16]portRef
}

type portRef struct {
	s    *Session
	side Side
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{byID: map[ID]*Session{}, byPort: map[uint16]portRef{}}
}

// Change is the difference between a table and a desired set of sessions.
type Change struct {
	Add    []*Session // new sessions (also those whose spec changed), by id
	Remove []*Session // sessions no longer wanted (also the old state of changed ones)
}

// Diff validates the desired sessions and returns what [Table.Apply] must add and
// remove to get there; sessions whose spec is unchanged keep their state. It returns
// ErrNoChanges if there is nothing to do, and an error wrapping ErrInvalidSpec,
// changing nothing, if a spec is invalid, two specs share an id or a port.
func (t *Table) Diff(desired []Spec, now time.Time) (Change, error) {
	ids := make(map[ID]bool, len(desired))
	ports := make(map[uint16]ID, 2*len(desired))
	for i := range desired {
		sp := &desired[i]
		if err := sp.Validate(); err != nil {
			return Change{}, err
		}
		if ids[sp.ID] {
			return Change{}, fmt.Errorf("%w: session %s listed twice", ErrInvalidSpec, sp.ID)
		}
		ids[sp.ID] = true
		for _, p := range sp.Ports {
			if other, ok := ports[p]; ok {
				return Change{}, fmt.Errorf("%w: port %d used by sessions %s and %s", ErrInvalidSpec, p, other, sp.ID)
			}
			ports[p] = sp.ID
		}
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	var c Change
	for i := range desired {
		sp := &desired[i]
		if cur, ok := t.byID[sp.ID]; ok {
			if cur.spec.Equal(sp) {
				continue
			}
			c.Remove = append(c.Remove, cur)
		}
		c.Add = append(c.Add, New(*sp, now))
	}
	for id, s := range t.byID {
		if !ids[id] {
			c.Remove = append(c.Remove, s)
		}
	}
	if len(c.Add) == 0 && len(c.Remove) == 0 {
		return Change{}, ErrNoChanges
	}
	byID := func(a, b *Session) int { return cmp.Compare(a.spec.ID, b.spec.ID) }
	slices.SortFunc(c.Add, byID)
	slices.SortFunc(c.Remove, byID)
	return c, nil
}

// Apply removes and then adds sessions. The relay calls it with a [Change] from
// [Table.Diff], leaving out sessions whose sockets it could not open.
func (t *Table) Apply(remove, add []*Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range remove {
		if t.byID[s.spec.ID] != s {
			continue
		}
		delete(t.byID, s.spec.ID)
		for _, p := range s.spec.Ports {
			if t.byPort[p].s == s {
				delete(t.byPort, p)
			}
		}
	}
	for _, s := range add {
		t.byID[s.spec.ID] = s
		for side, p := range s.spec.Ports {
			t.byPort[p] = portRef{s, Side(side)}
		}
	}
}

// Get returns the session with id.
func (t *Table) Get(id ID) (*Session, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.byID[id]
	return s, ok
}

// Lookup returns the session and side that own port.
func (t *Table) Lookup(port uint16) (*Session, Side, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.byPort[port]
	return r.s, r.side, ok
}

// Bind handles a bind packet that arrived on port from the endpoint from: it finds
// the port's session and calls [Session.Bind]. A port no session owns is
// ErrUnknownSession.
func (t *Table) Bind(port uint16, pkt []byte, from netip.AddrPort, now time.Time) (*Session, BindResult, error) {
	s, side, ok := t.Lookup(port)
	if !ok {
		return nil, BindResult{}, ErrUnknownSession
	}
	res, err := s.Bind(side, pkt, from, now)
	return s, res, err
}

// Sessions returns all sessions, by id.
func (t *Table) Sessions() []*Session {
	t.mu.RLock()
	out := make([]*Session, 0, len(t.byID))
	for _, s := range t.byID {
		out = append(out, s)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Session) int { return cmp.Compare(a.spec.ID, b.spec.ID) })
	return out
}

// Len returns the number of sessions.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}
