package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/controlclient"
	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/controlplane/relaymap"
	"github.com/cvlan/cvlan/datapath/relay"
	"github.com/cvlan/cvlan/datapath/relay/framed"
	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/internal/version"
)

// ErrNoController is the reason every framed client is refused while the relay
// has no configuration from a controller (none configured, or not connected yet).
var ErrNoController = errors.New("relay has no configuration from a controller yet: it serves no clients")

// link is the relay's control connection: it follows the controller's relay
// configuration, applies its UDP sessions to the relay and authorizes framed
// clients from it.
type link struct {
	log *slog.Logger
	rl  *relay.Relay
	fs  *framed.Server // for mesh links; nil in tests without one
	cur atomic.Pointer[index]

	mu     sync.Mutex
	ctx    context.Context // the controller connection's
	self   string          // this relay's ID, from the controller's hello
	meshes map[meshKey]context.CancelFunc
}

// meshKey is one mesh link this relay dials.
type meshKey struct {
	id, url string
	key     key.RelayPublic
}

// index is one configuration with the lookups the framed relay needs.
type index struct {
	cfg       *relaymap.Config
	byMachine map[key.MachinePublic]relaymap.Client
	byNode    map[tenantNode]string // node ID
	mesh      map[key.MachinePublic]bool
}

type tenantNode struct {
	tenant string
	node   key.NodePublic
}

func newIndex(cfg *relaymap.Config) *index {
	ix := &index{cfg: cfg, byMachine: make(map[key.MachinePublic]relaymap.Client, len(cfg.Clients)),
		byNode: make(map[tenantNode]string, len(cfg.Clients)), mesh: map[key.MachinePublic]bool{}}
	for _, r := range cfg.Mesh {
		if !r.Key.IsZero() {
			ix.mesh[key.MachinePublicFromRaw(r.Key.Raw())] = true
		}
	}
	for _, c := range cfg.Clients {
		ix.byMachine[c.Machine] = c
		ix.byNode[tenantNode{c.TenantID, c.Node}] = c.NodeID
	}
	return ix
}

// Hello is a relay's hello.
func (l *link) Hello() *controlpb.ClientHello {
	host, _ := os.Hostname()
	return &controlpb.ClientHello{ProtocolVersion: controlclient.ProtocolVersion, Relay: true,
		AgentVersion: version.Version, Hostname: host}
}

func (l *link) Connected(sh *controlpb.ServerHello) {
	l.mu.Lock()
	l.self = sh.GetRelayId()
	l.mu.Unlock()
}

func (l *link) Map(*netmap.Map) {} // never sent to a relay

func (l *link) Disconnected(err error) {
	// Keep serving the last configuration: sessions and clients stay valid while
	// the controller is away (fail-static, like the agents).
	l.log.Warn("controller connection lost; serving the last configuration", "err", err)
}

// Relay applies a new configuration: sessions to the UDP relay, clients and
// pairs to the framed relay's authorizer.
func (l *link) Relay(cfg *relaymap.Config) {
	old := l.cur.Swap(newIndex(cfg))
	if old != nil && l.fs != nil {
		// A node deleted, or with a new node key, loses its framed connection: its
		// grant was made for the old address. The agent reconnects if it may.
		for id, c := range old.cfg.Clients {
			if n, ok := cfg.Clients[id]; !ok || !n.Node.Equal(c.Node) || n.TenantID != c.TenantID || !n.Machine.Equal(c.Machine) {
				l.fs.Disconnect(c.TenantID, c.Node)
			}
		}
	}
	specs := make([]session.Spec, 0, len(cfg.Sessions))
	for _, s := range cfg.Sessions {
		specs = append(specs, session.Spec{ID: session.ID(s.ID), Ports: s.Ports,
			Tokens: [2]session.Token{s.Tokens[0], s.Tokens[1]}})
	}
	l.setMesh(cfg)
	switch err := l.rl.Set(specs); {
	case err == nil:
		l.log.Info("relay configuration applied", "seq", cfg.Seq, "clients", len(cfg.Clients), "sessions", len(cfg.Sessions), "pairs", len(cfg.Pairs))
	case errors.Is(err, relay.ErrNoChanges):
	default:
		l.log.Error("applying the controller's UDP sessions", "err", err)
	}
}

// Authorize is the framed relay's Authorizer: a machine the controller named as
// a client, reaching the nodes the controller paired it with.
func (l *link) Authorize(m key.MachinePublic) (framed.Grant, error) {
	ix := l.cur.Load()
	if ix == nil {
		return framed.Grant{}, fmt.Errorf("machine %s refused: %w", m, ErrNoController)
	}
	if ix.mesh[m] {
		return framed.Grant{Mesh: true}, nil
	}
	c, ok := ix.byMachine[m]
	if !ok {
		return framed.Grant{}, fmt.Errorf("machine %s refused: the controller does not know it as a node", m)
	}
	return framed.Grant{Tenant: c.TenantID, Node: c.Node, Peers: pairPeers{l: l, tenant: c.TenantID, node: c.NodeID}}, nil
}

// pairPeers lets a client reach the nodes the current configuration pairs it
// with; it reads the configuration at every send, so new pairs apply at once.
type pairPeers struct {
	l      *link
	tenant string
	node   string
}

func (p pairPeers) Allowed(dst key.NodePublic) bool {
	ix := p.l.cur.Load()
	id, ok := ix.byNode[tenantNode{p.tenant, dst}]
	return ok && ix.cfg.Allowed(p.tenant, p.node, id)
}

// setMesh keeps one link to each relay of the region whose ID is greater than
// this relay's (the others dial this one), redialing with backoff.
func (l *link) setMesh(cfg *relaymap.Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fs == nil || l.ctx == nil {
		return
	}
	want := map[meshKey]bool{}
	for _, r := range cfg.Mesh {
		url := r.TLSURL
		if url == "" {
			url = r.WSURL
		}
		if r.ID > l.self && url != "" && !r.Key.IsZero() {
			want[meshKey{id: r.ID, url: url, key: r.Key}] = true
		}
	}
	for k, cancel := range l.meshes {
		if !want[k] {
			cancel()
			delete(l.meshes, k)
		}
	}
	if l.meshes == nil {
		l.meshes = map[meshKey]context.CancelFunc{}
	}
	for k := range want {
		if _, ok := l.meshes[k]; !ok {
			ctx, cancel := context.WithCancel(l.ctx)
			l.meshes[k] = cancel
			go l.keepMesh(ctx, k)
		}
	}
}

// keepMesh links to one mesh peer until ctx ends.
func (l *link) keepMesh(ctx context.Context, k meshKey) {
	wait := time.Second
	for ctx.Err() == nil {
		done, err := l.fs.Mesh(ctx, framed.DialConfig{URL: k.url, RelayKey: k.key})
		if err != nil {
			l.log.Warn("mesh link failed; retrying", "relay", k.id, "url", k.url, "err", err, "in", wait)
		} else {
			l.log.Info("mesh link up", "relay", k.id, "url", k.url)
			wait = time.Second
			select {
			case <-done:
				l.log.Warn("mesh link down", "relay", k.id)
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// runController follows the controller until ctx ends or it refuses the relay
// for good.
func (l *link) run(ctx context.Context, cfg Config, priv key.Private) error {
	l.mu.Lock()
	l.ctx = ctx
	l.mu.Unlock()
	sk, pk := priv.Raw(), priv.MachinePublic().Raw()
	c := controlclient.New(controlclient.Config{
		URL: cfg.ControllerURL, ControllerKey: cfg.ControllerKey,
		Machine: noise.DHKey{Private: sk[:], Public: pk[:]}, Log: l.log,
	}, l)
	return c.Run(ctx)
}
