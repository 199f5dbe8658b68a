package state

import (
	"context"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
)

// CreateRelay adds a relay offered to every tenant.
func (s *State) CreateRelay(ctx context.Context, actor Actor, r model.Relay) (*model.Relay, error) {
	r.ID = model.NewID(model.PrefixRelay)
	err := s.write(ctx, actor, func(tx *txn) error {
		if err := validateRelay(tx.w, &r); err != nil {
			return err
		}
		r.CreatedAt = tx.now
		tx.w.Relays = tx.w.Relays.with(&r)
		tx.relays = true
		insert(tx, relaysT, &r, "", "relay", r.ID, r.Name)
		return nil
	})
	return &r, err
}

func validateRelay(w *World, r *model.Relay) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if o := w.Relays.ByKey(r.Name); o != nil && o.ID != r.ID {
		return model.Errorf(model.Conflict, "name", "a relay named %q exists", r.Name)
	}
	if !r.RelayKey.IsZero() {
		for _, o := range w.Relays.All() {
			if o.ID != r.ID && o.RelayKey.Equal(r.RelayKey) {
				return model.Errorf(model.Conflict, "relay_key", "relay key is already used by relay %q", o.Name)
			}
		}
	}
	return nil
}

// UpdateRelay changes a relay through fn; its name and ID stay.
func (s *State) UpdateRelay(ctx context.Context, actor Actor, id string, fn func(*model.Relay) error) (*model.Relay, error) {
	var out *model.Relay
	err := s.write(ctx, actor, func(tx *txn) error {
		cur := tx.w.Relays.ByID(id)
		if cur == nil {
			return model.NotFoundf("relay", id)
		}
		r, err := patched(cur, fn)
		if err != nil {
			return err
		}
		r.ID, r.Name, r.CreatedAt = cur.ID, cur.Name, cur.CreatedAt
		if err := validateRelay(tx.w, r); err != nil {
			return err
		}
		tx.w.Relays = tx.w.Relays.with(r)
		tx.relays = true
		update(tx, relaysT, r, "", "relay", r.ID, r.Name)
		out = r
		return nil
	})
	return out, err
}

// DeleteRelay removes a relay.
func (s *State) DeleteRelay(ctx context.Context, actor Actor, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		r := tx.w.Relays.ByID(id)
		if r == nil {
			return model.NotFoundf("relay", id)
		}
		tx.w.Relays = tx.w.Relays.without(id)
		tx.relays = true
		remove(tx, relaysT, "", "relay", id, r.Name)
		return nil
	})
}

// RelayByKey returns the relay whose relay key is k, or nil.
func (w *World) RelayByKey(k key.RelayPublic) *model.Relay {
	if k.IsZero() {
		return nil
	}
	for _, r := range w.Relays.All() {
		if r.RelayKey.Equal(k) {
			return r
		}
	}
	return nil
}
