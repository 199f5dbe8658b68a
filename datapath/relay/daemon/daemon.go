package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/datapath/relay"
	"github.com/cvlan/cvlan/datapath/relay/framed"
	"github.com/cvlan/cvlan/datapath/relay/stun"
	"github.com/cvlan/cvlan/internal/selfsigned"
	"github.com/cvlan/cvlan/internal/version"
)

// testAuthorizer, when set (by tests only), replaces the controller's word on
// which machines the framed relay serves.
var testAuthorizer framed.Authorizer

// Addrs are where a running relay listens, given to Run's ready callback.
type Addrs struct {
	Framed  net.Addr // TCP: HTTPS, framed relay over TCP and WebSocket
	STUN    net.Addr // UDP
	Metrics net.Addr // TCP: plain HTTP, /metrics and /healthz
	Key     key.RelayPublic
}

// NewLogger returns the slog logger cfg asks for, writing to w.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// daemon is one Run's state.
type daemon struct {
	cfg      Config
	log      *slog.Logger
	draining atomic.Bool
	ready    atomic.Bool
}

// Run runs the relay from a validated cfg until ctx is done, then drains: /healthz
// turns 503 and the framed listener closes at once, existing framed connections stay
// up for cfg.DrainGrace, then everything closes. It returns nil after a clean
// drain, or the first error that stopped it. ready, if not nil, is called once
// everything listens.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(Addrs)) (err error) {
	d := &daemon{cfg: cfg, log: log}
	var closers []func() error // run in reverse order on the way out
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			if cerr := closers[i](); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()

	priv, created, err := LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return err
	}
	pub := RelayPublic(priv)
	if created {
		log.Info("generated the relay key", "file", cfg.DataDir+"/"+KeyFile)
	}
	log.Info("relay key (register it with cvlanctl relay create --relay-key)", "relay_key", pub.String())
	cert, certCreated, err := selfsigned.Load(cfg.TLSCert, cfg.TLSKey, cfg.DataDir, "cvlan-relay", cfg.TLSNames)
	if err != nil {
		return err
	}
	if certCreated {
		log.Info("generated a self-signed TLS certificate for the framed listener")
	}

	// UDP relay: sessions come from the controller.
	rl, err := relay.New(relay.Options{
		XDP: cfg.XDP, Interfaces: cfg.Interfaces, Addr: cfg.RelayAddress,
		IdleTimeout: cfg.IdleTimeout, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("starting the UDP relay: %w", err)
	}
	closers = append(closers, func() error {
		if err := rl.Close(); err != nil {
			return fmt.Errorf("closing the UDP relay: %w", err)
		}
		return nil
	})
	log.Info("UDP relay up", "relay_address", cfg.RelayAddress, "xdp", cfg.XDP, "attached", len(rl.XDP()))
	ln := &link{log: log.With("component", "control"), rl: rl}
	var auth framed.Authorizer = ln
	if testAuthorizer != nil {
		auth = testAuthorizer
	}

	// STUN.
	var st stun.Server
	pc, err := net.ListenPacket("udp", cfg.STUNListen)
	if err != nil {
		return fmt.Errorf("STUN: listening on %s: %w", cfg.STUNListen, err)
	}
	stunDone := make(chan error, 1)
	go func() { stunDone <- st.Serve(pc) }()
	closers = append(closers, func() error {
		pc.Close()
		<-stunDone // net.ErrClosed: expected
		return nil
	})

	// Framed relay.
	fs, err := framed.NewServer(framed.Config{
		Key:        priv,
		Authorizer: auth,
		Logf: func(format string, args ...any) {
			log.Info(fmt.Sprintf(format, args...))
		},
	})
	if err != nil {
		return fmt.Errorf("starting the framed relay: %w", err)
	}
	closers = append(closers, fs.Close)
	ln.fs = fs
	fln, err := net.Listen("tcp", cfg.FramedListen)
	if err != nil {
		return fmt.Errorf("framed relay: listening on %s: %w", cfg.FramedListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle(noiseconn.Path, d.gate(fs))
	fsrv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// HTTP/1.1 only: both transports take over the connection (Upgrade, WebSocket).
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := fsrv.ServeTLS(fln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("framed relay: serving: %w", err)
		}
	}()
	closers = append(closers, func() error {
		fsrv.Close()
		wg.Wait()
		return nil
	})

	// Metrics and health.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		rl.Collector(), fs.Collector(), &st)
	mln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("metrics: listening on %s: %w", cfg.MetricsListen, err)
	}
	mmux := http.NewServeMux()
	mmux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mmux.HandleFunc("GET /healthz", d.healthz)
	msrv := &http.Server{Handler: mmux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := msrv.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics: serving: %w", err)
		}
	}()
	closers = append(closers, func() error {
		msrv.Close()
		wg.Wait()
		return nil
	})

	addrs := Addrs{Framed: fln.Addr(), STUN: pc.LocalAddr(), Metrics: mln.Addr(), Key: pub}
	d.ready.Store(true)
	log.Info("relay listening", "framed", "https://"+fln.Addr().String(), "stun", pc.LocalAddr().String(),
		"metrics", "http://"+mln.Addr().String(), "relay_key", pub.String(), "version", version.Version)
	if cfg.ControllerURL != "" {
		cctx, cancel := context.WithCancel(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ln.run(cctx, cfg, priv); err != nil {
				errc <- fmt.Errorf("controller: %w", err)
			}
		}()
		closers = append(closers, func() error {
			cancel()
			wg.Wait()
			return nil
		})
	} else {
		log.Warn("no controller configured: the relay serves no sessions and no framed clients", "reason", ErrNoController)
	}
	if ready != nil {
		ready(addrs)
	}

	select {
	case err := <-errc:
		return err
	case err := <-stunDone:
		stunDone <- err // for the closer
		return fmt.Errorf("STUN: %w", err)
	case <-ctx.Done():
	}
	return d.drain(fsrv, fs)
}

// drain refuses new framed connections, keeps existing ones for the grace period,
// then closes them. The caller closes the rest.
func (d *daemon) drain(fsrv *http.Server, fs *framed.Server) error {
	d.draining.Store(true)
	d.log.Info("draining: /healthz is 503, new framed connections are refused", "grace", d.cfg.DrainGrace)
	// Closing the listener refuses new connections; hijacked (framed) ones stay.
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainGrace)
	defer cancel()
	start := time.Now()
	if err := fsrv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("framed relay: shutting down: %w", err)
	}
	if rest := d.cfg.DrainGrace - time.Since(start); rest > 0 {
		t := time.NewTimer(rest)
		<-t.C
	}
	clients := 0
	for _, n := range fs.Clients() {
		clients += int(n)
	}
	d.log.Info("drained: closing the remaining framed connections and the relay", "framed_clients", clients)
	if err := fs.Close(); err != nil {
		return fmt.Errorf("framed relay: closing: %w", err)
	}
	return nil
}

// gate refuses framed requests while draining.
func (d *daemon) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
			http.Error(w, "relay draining", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// healthz is 200 once everything listens, 503 before and while draining.
func (d *daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case d.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case !d.ready.Load():
		http.Error(w, "starting", http.StatusServiceUnavailable)
	default:
		fmt.Fprintln(w, "ok")
	}
}
