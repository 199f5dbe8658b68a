package control

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/controlplane/store/sqlstore"
)

// FuzzAgentInput feeds arbitrary hellos and messages to the controller's side of
// the channel: it never panics, a refusal always says why, and an admitted hello
// always yields a node.
func FuzzAgentInput(f *testing.F) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Config{Driver: "sqlite", DSN: filepath.Join(f.TempDir(), "fuzz.db")})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	s0, err := state.Open(ctx, st, state.Options{})
	if err != nil {
		f.Fatal(err)
	}
	tn, _ := s0.CreateTenant(ctx, "fuzz", model.Tenant{Name: "fuzz"})
	nw, _ := s0.CreateNetwork(ctx, "fuzz", model.Network{TenantID: tn.ID, Name: "n", IPv4: netip.MustParsePrefix("100.64.0.0/16")})
	_, secret, err := s0.CreateEnrollmentKey(ctx, "fuzz", model.EnrollmentKey{TenantID: tn.ID, NetworkID: nw.ID, Reusable: true, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	s := New(s0, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	machine, _ := key.NewPrivate()
	nk, _ := key.NewPrivate()
	raw := nk.NodePublic().Raw()
	hello, _ := proto.Marshal(&controlpb.ClientHello{ProtocolVersion: 1, NodeKey: raw[:], Enroll: &controlpb.Enroll{Secret: secret, Name: "x"}})
	eps, _ := proto.Marshal(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_Endpoints{Endpoints: &controlpb.Endpoints{Endpoints: []string{"192.0.2.1:51820"}}}})
	rot, _ := proto.Marshal(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_NodeKeyRotated{NodeKeyRotated: &controlpb.NodeKeyRotated{NodeKey: []byte{1, 2}}}})
	f.Add(hello, eps)
	f.Add(hello, rot)
	f.Add([]byte{0x08, 0x02}, []byte{0xff})
	f.Fuzz(func(t *testing.T, hello, msg []byte) {
		reply, n := s.admit(ctx, machine.MachinePublic(), hello)
		if reply == nil {
			t.Fatal("no reply")
		}
		if n == nil && (reply.Error == "" || reply.Code == "") {
			t.Fatalf("refusal without a reason: %+v", reply)
		}
		if n == nil {
			return
		}
		if err := s.handle(ctx, n, msg); err != nil && err.Error() == "" {
			t.Fatal("error without a message")
		}
	})
}
