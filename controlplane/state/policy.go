package state

import (
	"context"
	"fmt"

	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/store"
)

// ErrStaleVersion is the Kind-Conflict error for a policy write against an old version.
func staleVersion(field string, have, want int64) error {
	kind := model.Conflict
	if field == "" {
		kind = model.PreconditionFailed
	}
	return model.Errorf(kind, field, "policy is at version %d, not %d; read it again and retry", have, want)
}

// SetPolicy stores a new version of a tenant's policy if the current version is
// still expected (0 = none yet). ifMatch selects the 412 flavour of the refusal.
// An empty document records a deletion.
func (s *State) SetPolicy(ctx context.Context, actor Actor, tenantID string, expected int64, ifMatch bool, document string) (*model.Policy, error) {
	if len(document) > model.MaxPolicyBytes {
		return nil, model.Errorf(model.Invalid, "document", "larger than %d bytes", model.MaxPolicyBytes)
	}
	if err := model.ValidateText("document", document); err != nil {
		return nil, err
	}
	var out *model.Policy
	err := s.write(ctx, actor, func(tx *txn) error {
		t, err := tx.tenantOr404(tenantID)
		if err != nil {
			return err
		}
		var cur int64
		if t.Policy != nil {
			cur = t.Policy.Version
		}
		if cur != expected {
			field := "version"
			if ifMatch {
				field = ""
			}
			return staleVersion(field, cur, expected)
		}
		if document == "" && (t.Policy == nil || t.Policy.Document == "") {
			return model.NotFoundf("policy of tenant", t.Name)
		}
		if document != "" && s.checkPolicy != nil {
			if err := s.checkPolicy(t, document); err != nil {
				return err
			}
		}
		p := &model.Policy{TenantID: tenantID, Version: cur + 1, Document: document, CreatedAt: tx.now, CreatedBy: string(actor)}
		t.Policy = p
		tx.policies = append(tx.policies, tenantID)
		tx.op(func(ctx context.Context, stx store.Tx) error { return stx.AddPolicy(ctx, p) })
		action := model.ActionUpdate
		if document == "" {
			action = model.ActionDelete
		}
		tx.audit(tenantID, action, "policy", tenantID, fmt.Sprintf("version %d", p.Version))
		out = p
		return nil
	})
	return out, err
}
