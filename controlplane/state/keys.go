package state

import (
	"context"
	"strings"

	"github.com/cvlan/cvlan/controlplane/model"
)

// CreateEnrollmentKey adds an enrollment key to k.NetworkID and returns it with its
// secret, which is stored only hashed and never available again.
func (s *State) CreateEnrollmentKey(ctx context.Context, actor Actor, k model.EnrollmentKey) (*model.EnrollmentKey, string, error) {
	k.ID = model.NewID(model.PrefixKey)
	secret, hash := model.NewSecret(k.ID)
	k.Hash, k.CreatedBy, k.Uses = hash, string(actor), 0
	k.Tags = nonNil(k.Tags)
	if !k.Reusable && k.MaxUses == 0 {
		k.MaxUses = 1
	}
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(k.TenantID)
		if err != nil {
			return err
		}
		if t.Networks.ByID(k.NetworkID) == nil {
			return model.Errorf(model.NotFound, "network", "network %q not found", k.NetworkID)
		}
		k.CreatedAt = tx.now
		if err := k.Validate(tx.now); err != nil {
			return err
		}
		t.Keys = t.Keys.with(&k)
		insert(tx, keysT, &k, k.TenantID, "enrollment_key", k.ID, "tags="+strings.Join(k.Tags, ","))
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return &k, secret, nil
}

// UpdateEnrollmentKey changes a key's description, tags or expiry through fn.
func (s *State) UpdateEnrollmentKey(ctx context.Context, actor Actor, tenantID, id string, fn func(*model.EnrollmentKey) error) (*model.EnrollmentKey, error) {
	var out *model.EnrollmentKey
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		cur := t.Keys.ByID(id)
		if cur == nil {
			return model.NotFoundf("enrollment key", id)
		}
		k, err := patched(cur, fn)
		if err != nil {
			return err
		}
		// Only description, tags and expiry may change.
		d, tags, exp := k.Description, nonNil(k.Tags), k.ExpiresAt
		*k = *cur
		k.Description, k.Tags, k.ExpiresAt = d, tags, exp
		if err := k.Validate(tx.now); err != nil {
			return err
		}
		t.Keys = t.Keys.with(k)
		update(tx, keysT, k, tenantID, "enrollment_key", k.ID, "")
		out = k
		return nil
	})
	return out, err
}

// DeleteEnrollmentKey revokes a key. Nodes it enrolled stay.
func (s *State) DeleteEnrollmentKey(ctx context.Context, actor Actor, tenantID, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		if t.Keys.ByID(id) == nil {
			return model.NotFoundf("enrollment key", id)
		}
		t.Keys = t.Keys.without(id)
		remove(tx, keysT, tenantID, "enrollment_key", id, "")
		return nil
	})
}
