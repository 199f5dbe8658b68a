// Package controller assembles the control plane from a validated Config: data
// directory, TLS certificate and Noise key, store, in-memory state and the HTTPS
// server; it implements `cvlan-controller init` and `serve`. It reads no flags or
// environment itself (package main does, through Config).
package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cvlan/cvlan/controlplane/api"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/control"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/state"
	"github.com/cvlan/cvlan/controlplane/store"
	"github.com/cvlan/cvlan/controlplane/store/sqlstore"
	"github.com/cvlan/cvlan/internal/selfsigned"
	"github.com/cvlan/cvlan/internal/version"
)

// NewLogger returns the slog logger cfg asks for, writing to w.
func NewLogger(cfg Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func openStore(ctx context.Context, cfg *Config) (store.Store, error) {
	return sqlstore.Open(ctx, sqlstore.Config{Driver: cfg.Database.Driver, DSN: cfg.Database.DSN})
}

// opened is what init and serve both start from.
type opened struct {
	cert    tls.Certificate
	created bool // the certificate was generated just now
	noise   NoiseKey
	store   store.Store
	state   *state.State
}

// open creates the data directory, loads (or creates) the TLS certificate and Noise
// key, and loads the store into memory. The caller closes the store.
func open(ctx context.Context, cfg Config) (*opened, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	var c opened
	var err error
	if c.cert, c.created, err = selfsigned.Load(cfg.TLSCert, cfg.TLSKey, cfg.DataDir, "cvlan-controller", cfg.TLSNames); err != nil {
		return nil, err
	}
	if c.noise, err = loadOrCreateNoiseKey(cfg.DataDir); err != nil {
		return nil, err
	}
	if c.store, err = openStore(ctx, &cfg); err != nil {
		return nil, err
	}
	if c.state, err = state.Open(ctx, c.store, state.Options{CheckPolicy: control.CheckPolicy}); err != nil {
		c.store.Close()
		return nil, err
	}
	return &c, nil
}

// Init prepares a new controller: data directory, TLS certificate, Noise key,
// database, and the first operator token, printed to out once.
func Init(ctx context.Context, cfg Config, out io.Writer) error {
	c, err := open(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.store.Close()
	s, cert, nk := c.state, c.cert, c.noise
	for _, t := range s.World().Tokens.All() {
		if t.Role == model.RoleOperator {
			return fmt.Errorf("controller in %s is already initialized (it has operator token %s); create more tokens with cvlanctl", cfg.DataDir, t.ID)
		}
	}
	tok, secret, err := s.CreateToken(ctx, "init", model.Token{Role: model.RoleOperator, Description: "created by cvlan-controller init"})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "data-dir: %s\n", cfg.DataDir)
	fmt.Fprintf(out, "tls-fingerprint: %s\n", apiv1.Fingerprint(cert.Certificate[0]))
	fmt.Fprintf(out, "noise-public-key: %s\n", nk.Public)
	fmt.Fprintf(out, "operator-token-id: %s\n", tok.ID)
	fmt.Fprintf(out, "operator-token: %s\n", secret)
	fmt.Fprintf(out, "# The token is shown only this once. Log in with:\n#   cvlanctl login --server https://HOST%s --token %s --fingerprint %s\n",
		portOf(cfg.Listen), secret, apiv1.Fingerprint(cert.Certificate[0]))
	return nil
}

func portOf(listen string) string {
	_, port, _ := net.SplitHostPort(listen)
	return ":" + port
}

// Run serves the API until ctx is done, then shuts down gracefully. ready, if not
// nil, receives the listening address once the server accepts connections.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(addr net.Addr)) error {
	c, err := open(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.store.Close()
	s, cert, nk := c.state, c.cert, c.noise
	fp := apiv1.Fingerprint(cert.Certificate[0])
	if c.created {
		log.Info("generated a self-signed TLS certificate", "fingerprint", fp)
	}
	if s.World().Tokens.Len() == 0 {
		log.Warn("no API tokens exist; run cvlan-controller init to create the first operator token")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ctl := control.New(s, control.Options{Key: nk.DHKey(), Log: log, Registry: reg})
	mux := http.NewServeMux()
	mux.Handle("POST "+noiseconn.Path, ctl)
	mux.Handle("/", api.New(s, api.Options{Log: log, Registry: reg, Version: version.Version, NoisePublicKey: nk.Public.String(),
		NodeStatus: ctl.NodeStatus, PolicyTest: control.PolicyTest}))

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	log.Info("controller listening", "addr", "https://"+ln.Addr().String(), "tls_fingerprint", fp,
		"noise_public_key", nk.Public.String(), "database", cfg.Database.Driver, "version", version.Version)
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Agent sessions are hijacked connections, which Shutdown does not track.
	ctl.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
