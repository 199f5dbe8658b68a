package netmap

import (
	"fmt"
	"net/netip"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/policy"
)

// Limits on a node's compiled policy, far above what a compiler emits for one node.
const (
	maxPolicyPrefixes = 1 << 20
	maxPolicyRules    = 1 << 20
)

// policyFromProto checks and converts a node's compiled policy; nil stays nil (the
// map carries none: a controller from before policy).
func policyFromProto(pp *controlpb.Policy) (*policy.NodePolicy, error) {
	if pp == nil {
		return nil, nil
	}
	if len(pp.GetPrefixes()) > maxPolicyPrefixes || len(pp.GetRules()) > maxPolicyRules {
		return nil, fmt.Errorf("policy: %d prefixes and %d rules is more than allowed", len(pp.GetPrefixes()), len(pp.GetRules()))
	}
	np := &policy.NodePolicy{Version: pp.GetVersion(), RuleNames: map[uint32]string{}}
	for i, p := range pp.GetPrefixes() {
		pfx, err := netip.ParsePrefix(p.GetPrefix())
		if err != nil || pfx != pfx.Masked() {
			return nil, fmt.Errorf("policy.prefixes[%d]: %q is not a prefix without host bits", i, p.GetPrefix())
		}
		np.Prefixes = append(np.Prefixes, policy.IdentityPrefix{Prefix: pfx, Identity: policy.Identity(p.GetIdentity())})
	}
	for i, r := range pp.GetRules() {
		switch {
		case r.GetDirection() > uint32(policy.Egress):
			return nil, fmt.Errorf("policy.rules[%d].direction: %d is not 0 (ingress) or 1 (egress)", i, r.GetDirection())
		case r.GetProto() != uint32(policy.ProtoTCP) && r.GetProto() != uint32(policy.ProtoUDP) &&
			r.GetProto() != uint32(policy.ProtoICMP) && r.GetProto() != uint32(policy.ProtoICMPv6):
			return nil, fmt.Errorf("policy.rules[%d].proto: %d is not tcp, udp, icmp or icmpv6", i, r.GetProto())
		case r.GetPortLo() > 65535 || r.GetPortHi() > 65535 || r.GetPortLo() > r.GetPortHi():
			return nil, fmt.Errorf("policy.rules[%d]: ports %d-%d are not a range within 0-65535", i, r.GetPortLo(), r.GetPortHi())
		case r.GetVerdict() > uint32(policy.Accept):
			return nil, fmt.Errorf("policy.rules[%d].verdict: %d is not 0 (deny) or 1 (accept)", i, r.GetVerdict())
		}
		np.Rules = append(np.Rules, policy.RuleEntry{
			Direction: policy.Direction(r.GetDirection()), Identity: policy.Identity(r.GetIdentity()), Proto: uint8(r.GetProto()),
			PortLo: uint16(r.GetPortLo()), PortHi: uint16(r.GetPortHi()), Verdict: policy.Verdict(r.GetVerdict()), RuleID: r.GetRuleId(),
		})
	}
	for id, name := range pp.GetRuleNames() {
		np.RuleNames[id] = name
	}
	return np, nil
}
