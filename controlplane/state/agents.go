package state

import (
	"context"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
)

// NodeByMachineKey finds the node enrolled with machine key k in any tenant, or
// returns nils. An agent is known by its machine key before its tenant is.
func (w *World) NodeByMachineKey(k key.MachinePublic) (*Tenant, *model.Node) {
	if k.IsZero() {
		return nil, nil
	}
	for _, t := range w.tenants {
		for _, n := range t.Nodes.All() {
			if n.MachineKey.Equal(k) {
				return t, n
			}
		}
	}
	return nil, nil
}

// RequestKeyRotation asks the node's agent for a new node key; the request stays
// pending (and is sent again on every connection) until the agent reports one.
func (s *State) RequestKeyRotation(ctx context.Context, actor Actor, tenantID, id string) (*model.Node, error) {
	return s.UpdateNode(ctx, actor, tenantID, id, func(n *model.Node) error {
		if n.MachineKey.IsZero() {
			return model.Errorf(model.PreconditionFailed, "node", "node %q has no agent (it was created by hand, not enrolled); set its node_key instead", n.Name)
		}
		if n.RotateRequestedAt.IsZero() {
			n.RotateRequestedAt = s.now().UTC()
		}
		return nil
	})
}
