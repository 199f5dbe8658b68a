package state

import (
	"maps"
	"slices"
	"strings"
)

// Coll is an immutable collection ordered by a sort key (the name, or the ID where
// objects have no name), indexed by ID. Changes return a new Coll sharing nothing
// mutable with the old one; the objects themselves are never modified in place.
type Coll[T any] struct {
	items []*T
	byID  map[string]*T
	id    func(*T) string
	key   func(*T) string
}

func newColl[T any](id, key func(*T) string) Coll[T] {
	return Coll[T]{byID: map[string]*T{}, id: id, key: key}
}

// Len is the number of objects.
func (c Coll[T]) Len() int { return len(c.items) }

// All returns the objects in order. The caller must not modify the slice or objects.
func (c Coll[T]) All() []*T { return c.items }

// ByID returns the object with the id, or nil.
func (c Coll[T]) ByID(id string) *T { return c.byID[id] }

// ByKey returns the object whose sort key is k, or nil.
func (c Coll[T]) ByKey(k string) *T {
	i, ok := c.search(k)
	if !ok {
		return nil
	}
	return c.items[i]
}

func (c Coll[T]) search(k string) (int, bool) {
	return slices.BinarySearchFunc(c.items, k, func(v *T, k string) int { return strings.Compare(c.key(v), k) })
}

// Page returns up to limit objects whose key sorts after after, and the cursor of
// the next page ("" on the last).
func (c Coll[T]) Page(after string, limit int) ([]*T, string) {
	start := 0
	if after != "" {
		i, ok := c.search(after)
		if ok {
			i++
		}
		start = i
	}
	end := min(start+limit, len(c.items))
	page := c.items[start:end]
	next := ""
	if end < len(c.items) && len(page) > 0 {
		next = c.key(page[len(page)-1])
	}
	return page, next
}

// with returns a copy of c holding v in place of any object with v's ID.
func (c Coll[T]) with(v *T) Coll[T] {
	out := c.without(c.id(v))
	i, _ := out.search(c.key(v))
	out.items = slices.Insert(out.items, i, v)
	out.byID[c.id(v)] = v
	return out
}

// without returns a copy of c lacking the object with id.
func (c Coll[T]) without(id string) Coll[T] {
	out := Coll[T]{items: slices.Clone(c.items), byID: maps.Clone(c.byID), id: c.id, key: c.key}
	if old, ok := out.byID[id]; ok {
		i, _ := out.search(c.key(old))
		out.items = slices.Delete(out.items, i, i+1)
		delete(out.byID, id)
	}
	return out
}

// withAll returns a copy of c holding vs as well; cheaper than repeated with when
// loading many objects at once. IDs in vs must be new to c.
func (c Coll[T]) withAll(vs []*T) Coll[T] {
	out := Coll[T]{items: slices.Concat(c.items, vs), byID: maps.Clone(c.byID), id: c.id, key: c.key}
	for _, v := range vs {
		out.byID[c.id(v)] = v
	}
	slices.SortFunc(out.items, func(a, b *T) int { return strings.Compare(c.key(a), c.key(b)) })
	return out
}

// KeyOf is v's sort key, the cursor that pages after it.
func (c Coll[T]) KeyOf(v *T) string { return c.key(v) }
