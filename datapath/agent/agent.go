// Package agent is cvlan-agent: it enrolls with the controller, follows its network
// map over the control channel, and turns each map into the WireGuard device
// (datapath/wg) and the overlay addresses and routes (datapath/route). It is
// fail-static: when the controller is unreachable it keeps the last applied state
// and reconnects with backoff, and on restart it applies the map saved in its state
// directory before the controller answers. It touches only the kernel state it owns
// (its interface, its routes) and never changes anything when a map is invalid.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/flynn/noise"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cvlan/cvlan/controlplane/controlclient"
	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/datapath/bpfpolicy"
	"github.com/cvlan/cvlan/datapath/nl"
	"github.com/cvlan/cvlan/datapath/relayconn"
	"github.com/cvlan/cvlan/datapath/route"
	"github.com/cvlan/cvlan/datapath/wg"
	"github.com/cvlan/cvlan/internal/version"
)

// PersistentKeepalive keeps NAT mappings towards peers open.
const PersistentKeepalive = 25 * time.Second

// ErrNodeDeleted is returned by Run when the controller says the node is gone; the
// agent has then removed its interface and forgotten its identity.
var ErrNodeDeleted = errors.New("the controller deleted this node")

// Agent is one running agent.
type Agent struct {
	cfg Config
	log *slog.Logger
	dir stateDir
	id  identity
	dev *wg.Device
	// enforcer is the eBPF policy on the overlay interface.
	enforcer *bpfpolicy.Enforcer
	routes   *route.Router
	// relays carries the packets of peers the controller says to relay.
	relays *relayconn.Proxy
	client *controlclient.Client
	m      *metrics

	mu        sync.Mutex // guards below; held while applying a map
	machine   key.Private
	node      key.Private
	applied   *netmap.Map
	endpoints []netip.AddrPort // last reported
}

// Run runs the agent until ctx ends or the controller refuses it for good.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	a := &Agent{cfg: cfg, log: cfg.Log, dir: stateDir(cfg.StateDir)}
	var err error
	if a.machine, a.node, err = a.dir.keys(); err != nil {
		return err
	}
	if a.id, err = a.dir.identity(); err != nil {
		return err
	}
	if !a.id.Enrolled && cfg.EnrollKey == "" {
		return fmt.Errorf("this machine is not enrolled yet: pass --enroll-key (from cvlanctl key create)")
	}
	a.log.Info("starting cvlan-agent", "version", version.Version, "machine_key", a.machine.MachinePublic(), "node_key", a.node.NodePublic(), "state_dir", cfg.StateDir)

	a.dev, err = wg.Open(wg.Options{Name: cfg.Interface, MTU: 1420, Mode: wg.Mode(cfg.WireGuard), Log: a.log})
	if err != nil {
		return fmt.Errorf("opening WireGuard interface %s: %w", cfg.Interface, err)
	}
	// A normal stop releases the device: a kernel link keeps forwarding with the
	// last peers (fail-static) until the agent is back. A deleted node closes it.
	removeDevice := false
	defer func() {
		if removeDevice {
			a.dev.Close()
		} else {
			a.dev.Release()
		}
	}()
	h, err := nl.Open()
	if err != nil {
		return err
	}
	defer h.Close()
	a.routes = route.New(h)
	a.log.Info("WireGuard interface up", "interface", cfg.Interface, "implementation", a.dev.Impl())
	// Pinned programs and maps outlive the agent: a restart reuses them, so the
	// policy in force keeps being enforced while the agent is away.
	if cfg.Policy == "off" {
		a.log.Warn("policy enforcement is off (--policy off): every overlay packet passes")
	} else {
		if a.enforcer, err = bpfpolicy.Open(bpfpolicy.Options{Interface: cfg.Interface, Log: a.log}); err != nil {
			return fmt.Errorf("loading the eBPF policy on %s: %w", cfg.Interface, err)
		}
		defer a.enforcer.Close()
	}
	a.m = newMetrics(a)
	a.relays, err = relayconn.New(relayconn.Config{
		WireGuardPort: uint16(cfg.ListenPort), Machine: a.machine, Logger: a.log, Registry: a.m.reg,
	})
	if err != nil {
		return fmt.Errorf("starting the relay proxy: %w", err)
	}
	defer a.relays.Close()

	// Fail-static: the last map first, before the controller says anything.
	if saved, err := a.dir.savedMap(); err != nil {
		a.log.Warn("ignoring the saved network map", "err", err)
	} else if saved != nil {
		a.log.Info("applying the saved network map until the controller answers", "peers", len(saved.Peers), "seq", saved.Seq)
		a.apply(saved)
	}

	if cfg.MetricsListen != "" {
		stop, err := a.serveMetrics(cfg.MetricsListen)
		if err != nil {
			return err
		}
		defer stop()
	}

	a.client = controlclient.New(controlclient.Config{
		URL: cfg.Controller, ControllerKey: cfg.ControllerKey, Log: a.log, KeepAlive: cfg.KeepAlive, MaxBackoff: cfg.MaxBackoff,
		Machine: dhKey(a.machine),
	}, (*handler)(a))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.watchEndpoints(ctx)
	go a.reportCounters(ctx)
	go a.watchPaths(ctx)
	err = a.client.Run(ctx)
	var ref *controlclient.RefusedError
	if errors.As(err, &ref) && (ref.Code == "node_deleted" || ref.Code == "machine_unknown" && a.id.Enrolled) {
		a.log.Warn("the controller deleted this node; removing its network", "reason", ref.Reason)
		removeDevice = true
		a.mu.Lock()
		a.applyLocked(nil)
		a.mu.Unlock()
		if a.enforcer != nil {
			if rerr := a.enforcer.Remove(); rerr != nil {
				a.log.Warn("removing the eBPF policy", "err", rerr)
			}
		}
		if ferr := a.dir.forget(); ferr != nil {
			a.log.Warn("forgetting the node", "err", ferr)
		}
		return fmt.Errorf("%w: %s", ErrNodeDeleted, ref.Reason)
	}
	return err
}

func dhKey(p key.Private) noise.DHKey {
	priv, pub := p.Raw(), p.MachinePublic().Raw()
	return noise.DHKey{Private: priv[:], Public: pub[:]}
}

// apply makes the kernel match m and saves m; nil removes every peer and address.
func (a *Agent) apply(m *netmap.Map) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applyLocked(m)
}

func (a *Agent) applyLocked(m *netmap.Map) {
	cfg := wg.Config{PrivateKey: a.node, ListenPort: a.cfg.ListenPort}
	rc := route.Config{Interface: a.cfg.Interface, MTU: 1420}
	var paths []relayconn.Path
	if m != nil {
		paths = a.relayPaths(m)
	}
	// Relayed peers' endpoints are loopback addresses of the relay proxy.
	relayed, err := a.relays.Set(paths)
	if err != nil {
		a.log.Error("setting up relayed peers; trying them direct", "err", err)
		relayed = nil
	}
	if m != nil {
		for _, p := range m.Peers {
			ep, ok := relayed[p.NodeKey]
			if !ok {
				ep = pickEndpoint(p.Endpoints)
			}
			cfg.Peers = append(cfg.Peers, wg.Peer{
				PublicKey: p.NodeKey, Endpoint: ep,
				AllowedIPs: p.AllowedIPs, PersistentKeepalive: PersistentKeepalive,
			})
		}
		rc.MTU, rc.Addresses, rc.Routes = m.Self.MTU, m.Self.Addresses, m.Self.Routes
		// Policy first: a new peer's address is unknown to the old policy (so
		// denied) until then, and access taken away is gone before peers change.
		if err := a.setPolicyLocked(m.Policy); err != nil {
			a.log.Error("loading the policy", "err", err)
			a.m.applyErrors.Inc()
			return
		}
	}
	if moved := a.movedPeers(m); len(moved) > 0 {
		// A peer on a new path starts a new session there: WireGuard keeps using
		// a live session's keys on any endpoint, so without this the new path would
		// show no handshake for minutes. Re-adding a peer with a persistent
		// keepalive makes WireGuard handshake at once.
		without := cfg
		without.Peers = slices.DeleteFunc(slices.Clone(cfg.Peers), func(p wg.Peer) bool { return moved[p.PublicKey] })
		if err := a.dev.Set(without); err != nil && !errors.Is(err, wg.ErrNoChanges) {
			a.log.Warn("resetting the sessions of peers on a new path", "err", err)
		}
	}
	if err := a.dev.Set(cfg); err != nil && !errors.Is(err, wg.ErrNoChanges) {
		a.log.Error("configuring WireGuard", "err", err)
		a.m.applyErrors.Inc()
		return
	}
	if err := a.routes.Set(rc); err != nil && !errors.Is(err, route.ErrNoChanges) {
		a.log.Error("configuring addresses and routes", "err", err)
		a.m.applyErrors.Inc()
		return
	}
	a.applied = m
	if m == nil {
		return
	}
	a.m.seq.Set(float64(m.Seq))
	if err := a.dir.saveMap(m); err != nil {
		a.log.Warn("saving the network map", "err", err)
	}
}

// pickEndpoint chooses the peer endpoint WireGuard starts with: the controller's
// order, IPv4 first. Path discovery replaces this choice when it lands.
func pickEndpoint(eps []netip.AddrPort) netip.AddrPort {
	for _, e := range eps {
		if e.Addr().Is4() {
			return e
		}
	}
	if len(eps) > 0 {
		return eps[0]
	}
	return netip.AddrPort{}
}

// rotateLocked makes a new node key, saves it, and reports it.
func (a *Agent) rotateLocked() {
	nk, err := key.NewPrivate()
	if err == nil {
		err = a.dir.saveNodeKey(nk)
	}
	if err != nil {
		a.log.Error("rotating the node key", "err", err)
		return
	}
	old := a.node.NodePublic()
	a.node = nk
	a.log.Info("node key rotated", "old", old, "new", nk.NodePublic())
	a.m.rotations.Inc()
	raw := nk.NodePublic().Raw()
	// If this send is lost, the next connection's hello carries the new key.
	a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_NodeKeyRotated{NodeKeyRotated: &controlpb.NodeKeyRotated{NodeKey: raw[:]}}})
}

// watchEndpoints reports the local endpoints when they change.
func (a *Agent) watchEndpoints(ctx context.Context) {
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.reportEndpoints(false)
		}
	}
}

func (a *Agent) reportEndpoints(force bool) {
	eps := localEndpoints(a.cfg.Interface, uint16(a.cfg.ListenPort))
	a.mu.Lock()
	same := slices.Equal(eps, a.endpoints)
	a.mu.Unlock()
	if same && !force {
		return
	}
	msg := &controlpb.Endpoints{}
	for _, e := range eps {
		msg.Endpoints = append(msg.Endpoints, e.String())
	}
	if err := a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_Endpoints{Endpoints: msg}}); err != nil {
		return
	}
	a.mu.Lock()
	a.endpoints = eps
	a.mu.Unlock()
}

// handler is the Agent as the control client sees it.
type handler Agent

func (h *handler) Hello() *controlpb.ClientHello {
	a := (*Agent)(h)
	a.mu.Lock()
	defer a.mu.Unlock()
	raw := a.node.NodePublic().Raw()
	host, _ := os.Hostname()
	hello := &controlpb.ClientHello{ProtocolVersion: controlclient.ProtocolVersion, AgentVersion: version.Version, Hostname: host, NodeKey: raw[:]}
	if !a.id.Enrolled {
		name := a.cfg.Name
		if name == "" {
			name = host
		}
		hello.Enroll = &controlpb.Enroll{Secret: a.cfg.EnrollKey, Name: name}
	}
	return hello
}

func (h *handler) Connected(sh *controlpb.ServerHello) {
	a := (*Agent)(h)
	a.m.connected.Set(1)
	a.mu.Lock()
	id := identity{NodeID: sh.GetNodeId(), Name: sh.GetNodeName(), Enrolled: true}
	if id != a.id {
		a.id = id
		if err := a.dir.saveIdentity(id); err != nil {
			a.log.Error("saving the node identity", "err", err)
		}
	}
	a.mu.Unlock()
	a.reportEndpoints(true)
}

func (h *handler) Map(m *netmap.Map) {
	a := (*Agent)(h)
	a.mu.Lock()
	defer a.mu.Unlock()
	if m.Self.RotateNodeKey && m.Self.NodeKey.Equal(a.node.NodePublic()) {
		a.rotateLocked()
	}
	a.applyLocked(m)
}

func (h *handler) Disconnected(err error) {
	a := (*Agent)(h)
	a.m.connected.Set(0)
	a.m.disconnects.Inc()
}

// serveMetrics serves /metrics and /healthz; stop shuts the server down.
func (a *Agent) serveMetrics(addr string) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := listen(addr)
	if err != nil {
		return nil, fmt.Errorf("metrics-listen %s: %w", addr, err)
	}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}
