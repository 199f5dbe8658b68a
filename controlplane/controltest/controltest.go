// Package controltest runs a real controller in-process for tests: SQLite in a
// temporary directory, the real state engine and API, behind an httptest TLS
// server. It is for tests only and never listens beyond loopback.
package controltest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/api"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/control"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/controlplane/store"
	"github.com/cvlan/cvlan/controlplane/store/sqlstore"
)

// Controller is a running in-process controller.
type Controller struct {
	URL            string // https://127.0.0.1:PORT
	Fingerprint    string // apiv1.Fingerprint of the server certificate
	OperatorToken  string // secret of an operator token
	NoisePublicKey string
	// NoiseKey is the controller's Noise key pair (agents pin its public half).
	NoiseKey noise.DHKey
	// Control is the agent control channel, mounted at noiseconn.Path.
	Control *control.Server
	State   *state.State
	Store   store.Store
	Server  *httptest.Server
}

// Options tune Start.
type Options struct {
	// Now is the controller's clock; time.Now when nil.
	Now func() time.Time
	// KeepAlive is the control channel's keep-alive interval (30 s when zero).
	KeepAlive time.Duration
}

// Start runs a controller until the test ends.
func Start(t testing.TB) *Controller { return StartWith(t, Options{}) }

// StartWith runs a controller with options until the test ends.
func StartWith(t testing.TB, opts Options) *Controller {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Config{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "cvlan.db")})
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := state.Open(ctx, st, state.Options{Now: opts.Now, CheckPolicy: control.CheckPolicy})
	if err != nil {
		t.Fatalf("opening state: %v", err)
	}
	_, secret, err := s.CreateToken(ctx, "controltest", model.Token{Role: model.RoleOperator})
	if err != nil {
		t.Fatalf("creating operator token: %v", err)
	}
	priv, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	raw, pub := priv.Raw(), priv.MachinePublic().Raw()
	nk := noise.DHKey{Private: raw[:], Public: pub[:]}
	noiseKey := priv.MachinePublic().String()
	ctl := control.New(s, control.Options{Key: nk, Now: opts.Now, KeepAlive: opts.KeepAlive, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	mux := http.NewServeMux()
	mux.Handle("POST "+noiseconn.Path, ctl)
	mux.Handle("/", api.New(s, api.Options{Version: "test", NoisePublicKey: noiseKey, NodeStatus: ctl.NodeStatus, PolicyTest: control.PolicyTest}))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(func() {
		ctl.Close()
		srv.Close()
	})
	return &Controller{
		URL:            srv.URL,
		Fingerprint:    apiv1.Fingerprint(srv.Certificate().Raw),
		OperatorToken:  secret,
		NoisePublicKey: noiseKey,
		NoiseKey:       nk,
		Control:        ctl,
		State:          s,
		Store:          st,
		Server:         srv,
	}
}
