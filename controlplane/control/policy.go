package control

import (
	"net/netip"
	"slices"

	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/policy"
)

// allowAll is the policy of a tenant that has set none: every node may reach every
// other node of its network on every port, as before policy existed.
const allowAll = `rules:
  - name: default-allow-all
    src: ["*"]
    dst: ["*"]
`

// Compile compiles tenant t's policy document (allowAll when it has none) against
// its nodes, checking the document's tests. The controller uses it to vet a new
// document before storing it.
func Compile(t *state.Tenant, document string) (*policy.Compiled, error) {
	return compile(t, document, true)
}

// compileForEnforcement is Compile without the document's tests: they gate a new
// document, but a node change that makes one fail later must not lock the
// tenant's agents out of the policy in force.
func compileForEnforcement(t *state.Tenant, document string) (*policy.Compiled, error) {
	return compile(t, document, false)
}

func compile(t *state.Tenant, document string, tests bool) (*policy.Compiled, error) {
	if document == "" {
		document = allowAll
	}
	p, err := policy.Parse([]byte(document))
	if err != nil {
		return nil, err
	}
	if !tests {
		p.Tests = nil
	}
	nodes := make([]policy.Node, 0, t.Nodes.Len())
	for _, n := range t.Nodes.All() {
		nodes = append(nodes, policyNode(n))
	}
	return policy.Compile(p, nodes)
}

// CheckPolicy is state.Options.CheckPolicy: a document is stored only if it
// compiles against the tenant's nodes and its tests pass.
func CheckPolicy(t *state.Tenant, document string) error {
	if _, err := Compile(t, document); err != nil {
		return model.Errorf(model.Invalid, "document", "%v", err)
	}
	return nil
}

func policyNode(n *model.Node) policy.Node {
	pn := policy.Node{ID: n.ID, Name: n.Name, Tags: n.Tags, Routes: n.Routes}
	for _, a := range []netip.Addr{n.IPv4, n.IPv6} {
		if a.IsValid() {
			pn.Addrs = append(pn.Addrs, a)
		}
	}
	return pn
}

// policyRelevant says whether a node change can change any compiled policy: a node
// added or removed, or its name, tags, addresses or routes changed. Endpoints, keys
// and last-seen times cannot.
func policyRelevant(c state.NodeChange) bool {
	if c.Old == nil || c.New == nil {
		return true
	}
	o, n := c.Old, c.New
	return o.Name != n.Name || o.IPv4 != n.IPv4 || o.IPv6 != n.IPv6 ||
		!slices.Equal(o.Tags, n.Tags) || !slices.Equal(o.Routes, n.Routes)
}

// tenantPolicy is one tenant's compiled policy, with each viewer's peers as a
// policy.PeerSet (a bit per identity class, not an entry per node pair).
type tenantPolicy struct {
	version  int64 // of the document; 0 for allowAll
	compiled *policy.Compiled
	peers    map[string]*policy.PeerSet // node id → the nodes it may talk to or hear from
}

func newTenantPolicy(version int64, c *policy.Compiled) *tenantPolicy {
	return &tenantPolicy{version: version, compiled: c, peers: map[string]*policy.PeerSet{}}
}

// allows says whether viewer may have other as a WireGuard peer.
func (tp *tenantPolicy) allows(viewer, other string) bool {
	ps, ok := tp.peers[viewer]
	if !ok {
		ps = tp.compiled.PeerSet(viewer) // nil for a node compiled before it existed
		tp.peers[viewer] = ps
	}
	return ps != nil && ps.Has(other)
}

// policyView is the wire form of a node's compiled policy from document version.
func policyView(np *policy.NodePolicy, version int64) *controlpb.Policy {
	out := &controlpb.Policy{Version: version}
	if np == nil {
		return out
	}
	for _, p := range np.Prefixes {
		out.Prefixes = append(out.Prefixes, &controlpb.IdentityPrefix{Prefix: p.Prefix.String(), Identity: uint32(p.Identity)})
	}
	for _, r := range np.Rules {
		out.Rules = append(out.Rules, &controlpb.RuleEntry{
			Direction: uint32(r.Direction), Identity: uint32(r.Identity), Proto: uint32(r.Proto),
			PortLo: uint32(r.PortLo), PortHi: uint32(r.PortHi), Verdict: uint32(r.Verdict), RuleId: r.RuleID,
		})
	}
	if len(np.RuleNames) > 0 {
		out.RuleNames = make(map[uint32]string, len(np.RuleNames))
		for id, name := range np.RuleNames {
			out.RuleNames[id] = name
		}
	}
	return out
}

// PolicyTest answers "can src reach dst on port/proto?" from tenant t's policy in
// force, naming the deciding rule. It is api.Options.PolicyTest.
func PolicyTest(t *state.Tenant, req apiv1.PolicyTest) (apiv1.PolicyDecision, error) {
	doc, ver := "", int64(0)
	if t.Policy != nil {
		doc, ver = t.Policy.Document, t.Policy.Version
	}
	c, err := Compile(t, doc)
	if err != nil {
		return apiv1.PolicyDecision{}, model.Errorf(model.PreconditionFailed, "", "the tenant's policy does not compile any more: %v", err)
	}
	resolve := func(field, ref string) (policy.Endpoint, string, error) {
		if n := t.Node(ref); n != nil {
			return policy.NodeEndpoint(n.ID), n.Name, nil
		}
		if a, err := netip.ParseAddr(ref); err == nil {
			return policy.AddrEndpoint(a), a.String(), nil
		}
		return policy.Endpoint{}, "", model.Errorf(model.Invalid, field, "%q is neither a node of tenant %s nor an address", ref, t.Name)
	}
	src, srcName, err := resolve("src", req.Src)
	if err != nil {
		return apiv1.PolicyDecision{}, err
	}
	dst, dstName, err := resolve("dst", req.Dst)
	if err != nil {
		return apiv1.PolicyDecision{}, err
	}
	proto := map[string]uint8{"tcp": policy.ProtoTCP, "udp": policy.ProtoUDP, "icmp": policy.ProtoICMP}[req.Proto]
	v, rule := c.Decide(src, dst, proto, uint16(req.Port))
	verdict := "deny"
	if v == policy.Accept {
		verdict = "accept"
	}
	return apiv1.PolicyDecision{Verdict: verdict, Rule: rule, Src: srcName, Dst: dstName, Port: req.Port, Proto: req.Proto, Version: ver}, nil
}
