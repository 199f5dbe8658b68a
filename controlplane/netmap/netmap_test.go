package netmap

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
)

func k(b byte) []byte {
	out := make([]byte, 32)
	out[0] = b
	return out
}

func self() *controlpb.Self {
	return &controlpb.Self{NodeId: "nd_a", Name: "a", Mtu: 1420, NodeKey: k(1),
		Addresses: []string{"100.64.0.1/32"}, Routes: []string{"100.64.0.0/24"}}
}

func peer(id string, b byte) *controlpb.Peer {
	return &controlpb.Peer{NodeId: id, Name: id, NodeKey: k(b), Endpoints: []string{"10.0.0.2:51820"}, AllowedIps: []string{"100.64.0.2/32"}}
}

func TestApply(t *testing.T) {
	m, err := FromProto(&controlpb.NetworkMap{Seq: 1, Self: self(), Peers: []*controlpb.Peer{peer("nd_c", 3), peer("nd_b", 2)}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Peers[0].NodeID != "nd_b" || m.Peer("nd_c") == nil || m.Peer("nd_x") != nil {
		t.Fatalf("peers not sorted or not found: %+v", m.Peers)
	}
	pol := &controlpb.Policy{Version: 3, Prefixes: []*controlpb.IdentityPrefix{{Prefix: "100.64.0.2/32", Identity: 1}},
		Rules: []*controlpb.RuleEntry{{Direction: 0, Identity: 1, Proto: 6, PortLo: 443, PortHi: 443, Verdict: 1, RuleId: 7}}, RuleNames: map[uint32]string{7: "web"}}
	m2, err := m.Apply(&controlpb.MapDelta{Seq: 2, Upsert: []*controlpb.Peer{peer("nd_b", 9), peer("nd_d", 4)}, Remove: []string{"nd_c"}, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range m2.Peers {
		ids = append(ids, p.NodeID)
	}
	if strings.Join(ids, ",") != "nd_b,nd_d" || m2.Peer("nd_b").NodeKey.Raw()[0] != 9 {
		t.Fatalf("after delta: %v", ids)
	}
	if m2.Policy == nil || m2.Policy.Version != 3 || m2.Policy.Rules[0].PortLo != 443 || m2.Policy.RuleNames[7] != "web" {
		t.Fatalf("policy not applied: %+v", m2.Policy)
	}
	if len(m.Peers) != 2 || m.Peer("nd_c") == nil || m.Peer("nd_b").NodeKey.Raw()[0] != 2 {
		t.Fatal("Apply modified the old map")
	}
	s := self()
	s.RotateNodeKey = true
	m3, err := m2.Apply(&controlpb.MapDelta{Seq: 3, Self: s})
	if err != nil || !m3.Self.RotateNodeKey || len(m3.Peers) != 2 {
		t.Fatalf("self delta: %v %+v", err, m3)
	}
	b, err := m3.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || back.Seq != 3 || back.Peer("nd_d") == nil || back.Self.Addresses[0].String() != "100.64.0.1/32" || back.Policy.Prefixes[0].Prefix.String() != "100.64.0.2/32" {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func TestBadInput(t *testing.T) {
	full := func(mod func(*controlpb.NetworkMap)) *controlpb.NetworkMap {
		m := &controlpb.NetworkMap{Seq: 1, Self: self(), Peers: []*controlpb.Peer{peer("nd_b", 2)}}
		mod(m)
		return m
	}
	cases := []struct {
		name string
		m    *controlpb.NetworkMap
		want string
	}{
		{"nil", nil, "missing"},
		{"no self", full(func(m *controlpb.NetworkMap) { m.Self = nil }), "self: missing"},
		{"self id", full(func(m *controlpb.NetworkMap) { m.Self.NodeId = "" }), "self.node_id"},
		{"mtu", full(func(m *controlpb.NetworkMap) { m.Self.Mtu = 70000 }), "self.mtu"},
		{"self key", full(func(m *controlpb.NetworkMap) { m.Self.NodeKey = []byte{1} }), "self.node_key"},
		{"zero key", full(func(m *controlpb.NetworkMap) { m.Self.NodeKey = make([]byte, 32) }), "all zero"},
		{"address", full(func(m *controlpb.NetworkMap) { m.Self.Addresses = []string{"nope"} }), "self.addresses[0]"},
		{"no address", full(func(m *controlpb.NetworkMap) { m.Self.Addresses = nil }), "self.addresses: empty"},
		{"host bits", full(func(m *controlpb.NetworkMap) { m.Self.Routes = []string{"100.64.0.1/24"} }), "host bits"},
		{"peer id", full(func(m *controlpb.NetworkMap) { m.Peers[0].NodeId = "" }), "peers[0]: node_id"},
		{"peer twice", full(func(m *controlpb.NetworkMap) { m.Peers = append(m.Peers, peer("nd_b", 5)) }), "appears twice"},
		{"endpoint", full(func(m *controlpb.NetworkMap) { m.Peers[0].Endpoints = []string{"10.0.0.1"} }), "peers[0]: endpoints[0]"},
		{"endpoint port", full(func(m *controlpb.NetworkMap) { m.Peers[0].Endpoints = []string{"10.0.0.1:0"} }), "endpoints[0]"},
		{"allowed", full(func(m *controlpb.NetworkMap) { m.Peers[0].AllowedIps = []string{"x"} }), "allowed_ips[0]"},
		{"nil peer", full(func(m *controlpb.NetworkMap) { m.Peers = []*controlpb.Peer{nil} }), "peers[0]: missing"},
		{"policy prefix", full(func(m *controlpb.NetworkMap) {
			m.Policy = &controlpb.Policy{Prefixes: []*controlpb.IdentityPrefix{{Prefix: "100.64.0.1/24"}}}
		}), "policy.prefixes[0]"},
		{"policy direction", full(func(m *controlpb.NetworkMap) {
			m.Policy = &controlpb.Policy{Rules: []*controlpb.RuleEntry{{Direction: 2, Proto: 6}}}
		}), "policy.rules[0].direction"},
		{"policy proto", full(func(m *controlpb.NetworkMap) {
			m.Policy = &controlpb.Policy{Rules: []*controlpb.RuleEntry{{Proto: 47}}}
		}), "policy.rules[0].proto"},
		{"policy ports", full(func(m *controlpb.NetworkMap) {
			m.Policy = &controlpb.Policy{Rules: []*controlpb.RuleEntry{{Proto: 6, PortLo: 10, PortHi: 9}}}
		}), "policy.rules[0]: ports"},
		{"policy verdict", full(func(m *controlpb.NetworkMap) {
			m.Policy = &controlpb.Policy{Rules: []*controlpb.RuleEntry{{Proto: 6, PortHi: 9, Verdict: 3}}}
		}), "policy.rules[0].verdict"},
		{"relay id twice", full(func(m *controlpb.NetworkMap) {
			m.Relays = []*controlpb.RelayInfo{{Id: "rl_1"}, {Id: "rl_1"}}
		}), "relays[1].id"},
		{"relay address", full(func(m *controlpb.NetworkMap) { m.Relays = []*controlpb.RelayInfo{{Id: "rl_1", Address: "x"}} }), "relays[0].address"},
		{"relay url", full(func(m *controlpb.NetworkMap) { m.Relays = []*controlpb.RelayInfo{{Id: "rl_1", TlsUrl: "http://x"}} }), "relays[0].tls_url"},
		{"relay key", full(func(m *controlpb.NetworkMap) { m.Relays = []*controlpb.RelayInfo{{Id: "rl_1", RelayKey: []byte{1}}} }), "relays[0].relay_key"},
		{"relay mode", full(func(m *controlpb.NetworkMap) { m.Peers[0].Relay = &controlpb.RelayPath{Mode: 3, RelayId: "rl_1"} }), "peers[0]: relay.mode"},
		{"relay path id", full(func(m *controlpb.NetworkMap) { m.Peers[0].Relay = &controlpb.RelayPath{Mode: 2} }), "relay.relay_id"},
		{"relay side", full(func(m *controlpb.NetworkMap) {
			m.Peers[0].Relay = &controlpb.RelayPath{Mode: 1, RelayId: "rl_1", Side: 2, Port: 1, Token: k(1)}
		}), "relay.side"},
		{"relay port", full(func(m *controlpb.NetworkMap) {
			m.Peers[0].Relay = &controlpb.RelayPath{Mode: 1, RelayId: "rl_1", Port: 70000, Token: k(1)}
		}), "relay.port"},
		{"relay token", full(func(m *controlpb.NetworkMap) {
			m.Peers[0].Relay = &controlpb.RelayPath{Mode: 1, RelayId: "rl_1", Port: 4000, Token: make([]byte, 32)}
		}), "relay.token: all zero"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := FromProto(c.m)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}

	m, err := FromProto(full(func(*controlpb.NetworkMap) {}))
	if err != nil {
		t.Fatal(err)
	}
	deltas := []struct {
		name string
		d    *controlpb.MapDelta
		want string
	}{
		{"nil", nil, "missing"},
		{"stale", &controlpb.MapDelta{Seq: 1}, "seq 1 is not after"},
		{"other self", &controlpb.MapDelta{Seq: 2, Self: func() *controlpb.Self { s := self(); s.NodeId = "nd_x"; return s }()}, "is not this node"},
		{"self as peer", &controlpb.MapDelta{Seq: 2, Upsert: []*controlpb.Peer{peer("nd_a", 7)}}, "its own peer"},
		{"bad upsert", &controlpb.MapDelta{Seq: 2, Upsert: []*controlpb.Peer{{NodeId: "nd_x"}}}, "upsert[0]: node_key"},
		{"empty remove", &controlpb.MapDelta{Seq: 2, Remove: []string{""}}, "remove[0]"},
	}
	for _, c := range deltas {
		t.Run("delta "+c.name, func(t *testing.T) {
			_, err := m.Apply(c.d)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
	if _, err := Unmarshal([]byte(`{"seq":1}`)); err == nil {
		t.Fatal("saved map without self accepted")
	}
}

// FuzzMap feeds arbitrary bytes to the map and delta decoders: they never panic,
// and whatever they accept survives a save and load.
func FuzzMap(f *testing.F) {
	full, _ := proto.Marshal(&controlpb.NetworkMap{Seq: 1, Self: self(), Peers: []*controlpb.Peer{peer("nd_b", 2)}})
	delta, _ := proto.Marshal(&controlpb.MapDelta{Seq: 2, Upsert: []*controlpb.Peer{peer("nd_c", 3)}, Remove: []string{"nd_b"}})
	f.Add(full, delta)
	f.Add([]byte{}, []byte{0xff})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var pm controlpb.NetworkMap
		if proto.Unmarshal(a, &pm) != nil {
			return
		}
		m, err := FromProto(&pm)
		if err != nil {
			return
		}
		var d controlpb.MapDelta
		if proto.Unmarshal(b, &d) == nil {
			if m2, err := m.Apply(&d); err == nil {
				m = m2
			}
		}
		saved, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Unmarshal(saved); err != nil {
			t.Fatalf("a map that was accepted does not load back: %v", err)
		}
	})
}

// TestRelays: the relay map and a peer's relay path arrive, change by delta and
// survive a save and load.
func TestRelays(t *testing.T) {
	p := peer("nd_b", 2)
	p.Relay = &controlpb.RelayPath{Mode: 1, RelayId: "rl_1", SessionId: 7, Side: 1, Port: 40001, Token: k(9)}
	m, err := FromProto(&controlpb.NetworkMap{Seq: 1, Self: self(), Peers: []*controlpb.Peer{p},
		Relays: []*controlpb.RelayInfo{{Id: "rl_1", Name: "fra1", Address: "192.0.2.5", TlsUrl: "https://192.0.2.5", RelayKey: k(4)}}})
	if err != nil {
		t.Fatal(err)
	}
	r, rp := m.Relay("rl_1"), m.Peers[0].Relay
	if r == nil || r.Addr.String() != "192.0.2.5" || r.Key.IsZero() || rp.Mode != PathUDP || rp.Port != 40001 || rp.Side != 1 || rp.Token[0] != 9 {
		t.Fatalf("relay %+v, path %+v", r, rp)
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || back.Peers[0].Relay.Token != rp.Token || back.Relay("rl_1").Key != r.Key {
		t.Fatalf("saved and loaded: %v %+v", err, back)
	}
	n, err := m.Apply(&controlpb.MapDelta{Seq: 2, RelayMap: &controlpb.RelayMap{}, Upsert: []*controlpb.Peer{peer("nd_b", 2)}})
	if err != nil || len(n.Relays) != 0 || n.Peers[0].Relay != nil {
		t.Fatalf("after delta: %v %+v", err, n)
	}
	if len(m.Relays) != 1 {
		t.Fatal("Apply changed the old map")
	}
}
