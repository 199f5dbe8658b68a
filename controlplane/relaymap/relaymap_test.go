package relaymap

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
)

func fill(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}

func validConfig() *controlpb.RelayConfig {
	return &controlpb.RelayConfig{
		Seq:      1,
		Clients:  []*controlpb.RelayClient{{NodeId: "nd_a", TenantId: "tn_1", MachineKey: fill(1), NodeKey: fill(2)}},
		Sessions: []*controlpb.RelaySession{{Id: 7, PortA: 40000, PortB: 40001, TokenA: fill(3), TokenB: fill(4)}},
		Pairs:    []*controlpb.RelayPair{{TenantId: "tn_1", NodeA: "nd_b", NodeB: "nd_a"}},
	}
}

func TestFromProtoAndApply(t *testing.T) {
	c, err := FromProto(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Allowed("tn_1", "nd_a", "nd_b") || c.Allowed("tn_2", "nd_a", "nd_b") || len(c.Clients) != 1 || c.Sessions[7].Ports != [2]uint16{40000, 40001} {
		t.Fatalf("config %+v", c)
	}
	d := &controlpb.RelayDelta{
		Seq: 2, RemoveClients: []string{"nd_a"}, RemoveSessions: []uint64{7},
		RemovePairs:    []*controlpb.RelayPair{{TenantId: "tn_1", NodeA: "nd_a", NodeB: "nd_b"}},
		UpsertSessions: []*controlpb.RelaySession{{Id: 8, PortA: 40000, PortB: 40002, TokenA: fill(5), TokenB: fill(6)}},
	}
	n, err := c.Apply(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Clients) != 0 || len(n.Pairs) != 0 || len(n.Sessions) != 1 || n.Sessions[8].Ports[1] != 40002 {
		t.Fatalf("after delta %+v", n)
	}
	if len(c.Clients) != 1 || len(c.Sessions) != 1 {
		t.Fatal("Apply changed the old config")
	}
	if _, err := n.Apply(d); err == nil || !strings.Contains(err.Error(), "seq 2 is not after") {
		t.Fatalf("replayed delta: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		mut        func(*controlpb.RelayConfig)
	}{
		{"short machine key", "clients[0]: machine_key", func(c *controlpb.RelayConfig) { c.Clients[0].MachineKey = fill(1)[:31] }},
		{"zero node key", "clients[0]: node_key", func(c *controlpb.RelayConfig) { c.Clients[0].NodeKey = make([]byte, 32) }},
		{"empty tenant", "clients[0]: tenant_id", func(c *controlpb.RelayConfig) { c.Clients[0].TenantId = "" }},
		{"port 0", "port 0 is not a port", func(c *controlpb.RelayConfig) { c.Sessions[0].PortA = 0 }},
		{"port too big", "port 70000", func(c *controlpb.RelayConfig) { c.Sessions[0].PortB = 70000 }},
		{"same ports", "both sides on port", func(c *controlpb.RelayConfig) { c.Sessions[0].PortB = 40000 }},
		{"same tokens", "same token", func(c *controlpb.RelayConfig) { c.Sessions[0].TokenB = fill(3) }},
		{"short token", "token of side a", func(c *controlpb.RelayConfig) { c.Sessions[0].TokenA = nil }},
		{"shared port", "belongs to sessions", func(c *controlpb.RelayConfig) {
			c.Sessions = append(c.Sessions, &controlpb.RelaySession{Id: 9, PortA: 40001, PortB: 40005, TokenA: fill(8), TokenB: fill(9)})
		}},
		{"self pair", "both \"nd_b\"", func(c *controlpb.RelayConfig) { c.Pairs[0].NodeB = "nd_b" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := validConfig()
			tc.mut(pc)
			_, err := FromProto(pc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzRelayConfig(f *testing.F) {
	b, _ := proto.Marshal(validConfig())
	f.Add(b, []byte{})
	f.Fuzz(func(t *testing.T, full, delta []byte) {
		var pc controlpb.RelayConfig
		if proto.Unmarshal(full, &pc) != nil {
			return
		}
		c, err := FromProto(&pc)
		if err != nil {
			return
		}
		var pd controlpb.RelayDelta
		if proto.Unmarshal(delta, &pd) != nil {
			return
		}
		if n, err := c.Apply(&pd); err == nil {
			for p := range n.Pairs {
				if p.A >= p.B {
					t.Fatalf("pair not ordered: %+v", p)
				}
			}
		}
	})
}
