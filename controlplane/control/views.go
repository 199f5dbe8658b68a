package control

import (
	"net/netip"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/model"
)

// visible says whether viewer gets other as a WireGuard peer. Until policy decides
// it, every node of a network sees every other node of that network that has a
// node key. It must stay cheap: the fan-out asks it once per affected node.
func visible(viewer, other *model.Node) bool {
	return viewer.ID != other.ID && viewer.NetworkID == other.NetworkID && !other.NodeKey.IsZero()
}

// peerView is what other nodes see of n: the only part of n whose change is sent
// to its peers.
func peerView(n *model.Node) *controlpb.Peer {
	raw := n.NodeKey.Raw()
	p := &controlpb.Peer{NodeId: n.ID, Name: n.Name, NodeKey: raw[:]}
	for _, e := range n.Endpoints {
		p.Endpoints = append(p.Endpoints, e.String())
	}
	p.AllowedIps = hostPrefixes(n)
	for _, r := range n.Routes {
		p.AllowedIps = append(p.AllowedIps, r.String())
	}
	return p
}

func hostPrefixes(n *model.Node) []string {
	var out []string
	for _, a := range []netip.Addr{n.IPv4, n.IPv6} {
		if a.IsValid() {
			out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
		}
	}
	return out
}

// selfView is n's own part of its map in network nw.
func selfView(n *model.Node, nw *model.Network) *controlpb.Self {
	raw := n.NodeKey.Raw()
	s := &controlpb.Self{
		NodeId: n.ID, Name: n.Name, TenantId: n.TenantID, NetworkId: n.NetworkID,
		Addresses: hostPrefixes(n), NodeKey: raw[:], RotateNodeKey: !n.RotateRequestedAt.IsZero(),
		Mtu: model.DefaultMTU,
	}
	if nw != nil {
		s.NetworkName = nw.Name
		if nw.MTU > 0 {
			s.Mtu = uint32(nw.MTU)
		}
		for _, p := range []netip.Prefix{nw.IPv4, nw.IPv6} {
			if p.IsValid() {
				s.Routes = append(s.Routes, p.String())
			}
		}
	}
	return s
}
