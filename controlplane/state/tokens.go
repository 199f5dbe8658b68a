package state

import (
	"context"

	"github.com/cvlan/cvlan/controlplane/model"
)

// CreateToken adds an API token and returns it with its secret, shown only now.
func (s *State) CreateToken(ctx context.Context, actor Actor, tok model.Token) (*model.Token, string, error) {
	tok.ID = model.NewID(model.PrefixToken)
	secret, hash := model.NewSecret(tok.ID)
	tok.Hash, tok.CreatedBy = hash, string(actor)
	err := s.write(ctx, actor, func(tx *txn) error {
		if err := tok.Validate(tx.now); err != nil {
			return err
		}
		if tok.TenantID != "" && tx.w.tenants[tok.TenantID] == nil {
			return model.Errorf(model.NotFound, "tenant", "tenant %q not found", tok.TenantID)
		}
		tok.CreatedAt = tx.now
		tx.w.Tokens = tx.w.Tokens.with(&tok)
		insert(tx, tokensT, &tok, tok.TenantID, "token", tok.ID, string(tok.Role))
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return &tok, secret, nil
}

// UpdateToken changes a token's description through fn.
func (s *State) UpdateToken(ctx context.Context, actor Actor, id string, fn func(*model.Token) error) (*model.Token, error) {
	var out *model.Token
	err := s.write(ctx, actor, func(tx *txn) error {
		cur := tx.w.Tokens.ByID(id)
		if cur == nil {
			return model.NotFoundf("token", id)
		}
		t, err := patched(cur, fn)
		if err != nil {
			return err
		}
		d := t.Description
		*t = *cur
		t.Description = d
		if err := model.ValidateDescription("description", d); err != nil {
			return err
		}
		tx.w.Tokens = tx.w.Tokens.with(t)
		update(tx, tokensT, t, t.TenantID, "token", t.ID, "")
		out = t
		return nil
	})
	return out, err
}

// DeleteToken revokes a token at once.
func (s *State) DeleteToken(ctx context.Context, actor Actor, id string) error {
	return s.write(ctx, actor, func(tx *txn) error {
		t := tx.w.Tokens.ByID(id)
		if t == nil {
			return model.NotFoundf("token", id)
		}
		tx.w.Tokens = tx.w.Tokens.without(id)
		remove(tx, tokensT, t.TenantID, "token", id, string(t.Role))
		return nil
	})
}

// Authenticate returns the token a bearer secret belongs to, or an Unauthenticated
// error that does not say whether the token exists.
func (s *State) Authenticate(secret string) (*model.Token, error) {
	id, ok := model.SecretID(secret)
	if !ok {
		return nil, model.Errorf(model.Unauthenticated, "", "malformed token")
	}
	t := s.World().Tokens.ByID(id)
	if t == nil || !model.SecretMatches(secret, t.Hash) {
		return nil, model.Errorf(model.Unauthenticated, "", "invalid token")
	}
	if !t.ValidAt(s.now()) {
		return nil, model.Errorf(model.Unauthenticated, "", "token expired")
	}
	return t, nil
}
