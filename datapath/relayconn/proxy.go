package relayconn

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/relay/session"
)

// Mode says how a peer's packets reach its relay.
type Mode uint8

// The modes of a Path.
const (
	ModeUDP    Mode = iota + 1 // a UDP relay session
	ModeFramed                 // framed relay over TLS/TCP or WebSocket
)

func (m Mode) String() string {
	switch m {
	case ModeUDP:
		return "udp"
	case ModeFramed:
		return "framed"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Path is how one WireGuard peer is reached through a relay.
type Path struct {
	// Peer is the peer's WireGuard key; with ModeFramed it is also the peer's
	// address on the relay.
	Peer key.NodePublic
	// Mode selects which of the fields below are used.
	Mode Mode

	// ModeUDP: Relay is the relay's address and the port of this side of the
	// session, Session and Side name the session and this side of it, and Token is
	// this side's token (the key of its bind packets' MACs).
	Relay   netip.AddrPort
	Session session.ID
	Side    session.Side
	Token   session.Token

	// ModeFramed: RelayKey is the relay's pinned key and URLs its base URLs, tried
	// in order (https:// is the HTTP Upgrade over TLS/TCP, wss:// the WebSocket; see
	// framed.DialConfig).
	RelayKey key.RelayPublic
	URLs     []string
}

// ErrInvalidPath is wrapped by the errors of [Path.Validate] and of Set when a path
// is invalid.
var ErrInvalidPath = errors.New("invalid relay path")

// Validate checks that p can be carried. It does not check that the relay exists.
func (p *Path) Validate() error {
	if p.Peer.IsZero() {
		return fmt.Errorf("%w: no peer key", ErrInvalidPath)
	}
	switch p.Mode {
	case ModeUDP:
		a := p.Relay.Addr().Unmap()
		switch {
		case !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || p.Relay.Port() == 0:
			return fmt.Errorf("%w: UDP relay address %q", ErrInvalidPath, p.Relay)
		case !p.Side.Valid():
			return fmt.Errorf("%w: session side %d", ErrInvalidPath, p.Side)
		case p.Token.IsZero():
			return fmt.Errorf("%w: zero session token", ErrInvalidPath)
		}
	case ModeFramed:
		if p.RelayKey.IsZero() {
			return fmt.Errorf("%w: framed relay without a relay key", ErrInvalidPath)
		}
		if len(p.URLs) == 0 {
			return fmt.Errorf("%w: framed relay without URLs", ErrInvalidPath)
		}
		for _, s := range p.URLs {
			u, err := url.Parse(s)
			if err != nil {
				return fmt.Errorf("%w: framed relay URL: %v", ErrInvalidPath, err)
			}
			switch u.Scheme {
			case "https", "http", "wss", "ws":
			default:
				return fmt.Errorf("%w: framed relay URL %q: want https, http, wss or ws", ErrInvalidPath, s)
			}
			if u.Host == "" {
				return fmt.Errorf("%w: framed relay URL %q without a host", ErrInvalidPath, s)
			}
		}
	default:
		return fmt.Errorf("%w: %v", ErrInvalidPath, p.Mode)
	}
	return nil
}

// same reports whether p and o carry packets the same way: only the fields of the
// mode count, tokens are compared in constant time.
func (p *Path) same(o *Path) bool {
	if p.Peer != o.Peer || p.Mode != o.Mode {
		return false
	}
	if p.Mode == ModeUDP {
		return p.Relay == o.Relay && p.Session == o.Session && p.Side == o.Side && p.Token.Equal(&o.Token)
	}
	return p.RelayKey.Equal(o.RelayKey) && slices.Equal(p.URLs, o.URLs)
}

// Defaults of Config.
const (
	DefaultBindRetry   = time.Second
	DefaultBindRefresh = 20 * time.Second
	DefaultRedialMin   = 250 * time.Millisecond
	DefaultRedialMax   = 10 * time.Second
	DefaultDialTimeout = 10 * time.Second
)

// Config configures a Proxy.
type Config struct {
	// WireGuardPort is WireGuard's listening port: packets from relays are
	// delivered to 127.0.0.1:WireGuardPort, and the loopback endpoints accept
	// packets only from there. Required.
	WireGuardPort uint16
	// Machine is this machine's Noise key; it authenticates framed connections.
	// Required for ModeFramed paths.
	Machine key.Private
	// TLSConfig, if set, verifies the framed relays' certificates (see
	// framed.DialConfig); the relay's pinned key authenticates it either way.
	TLSConfig *tls.Config
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
	// Registry, if set, gets the proxy's metrics (cvlan_agent_relay_*) at New; Close
	// unregisters them.
	Registry prometheus.Registerer

	// BindRetry is how often a UDP path sends bind packets until the relay acks
	// one saying both sides are bound, and after a bind went unanswered; 0 is
	// DefaultBindRetry.
	BindRetry time.Duration
	// BindRefresh is how often a bound UDP path binds again, keeping its NAT
	// mapping and rebinding after a relay restart; 0 is DefaultBindRefresh.
	BindRefresh time.Duration
	// RedialMin and RedialMax bound the backoff between framed connection
	// attempts: it starts at RedialMin and doubles up to RedialMax; 0 is
	// DefaultRedialMin, DefaultRedialMax.
	RedialMin, RedialMax time.Duration
	// DialTimeout bounds one framed dial and handshake, per URL; 0 is
	// DefaultDialTimeout.
	DialTimeout time.Duration
}

// withDefaults checks cfg and fills in the defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.WireGuardPort == 0 {
		return cfg, errors.New("relay proxy: no WireGuard port")
	}
	if cfg.BindRetry < 0 || cfg.BindRefresh < 0 || cfg.RedialMin < 0 || cfg.RedialMax < 0 || cfg.DialTimeout < 0 {
		return cfg, errors.New("relay proxy: negative interval")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.BindRetry, DefaultBindRetry)
	def(&cfg.BindRefresh, DefaultBindRefresh)
	def(&cfg.RedialMin, DefaultRedialMin)
	def(&cfg.RedialMax, DefaultRedialMax)
	def(&cfg.DialTimeout, DefaultDialTimeout)
	cfg.RedialMax = max(cfg.RedialMax, cfg.RedialMin)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// maxPacket is the largest datagram read: the largest UDP payload.
const maxPacket = 65535

var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// Proxy carries WireGuard packets of relayed peers between loopback endpoints and
// relays. Its methods are safe for concurrent use.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	wg      netip.AddrPort // 127.0.0.1:WireGuardPort
	m       *metrics
	counter atomic.Uint64 // the last bind counter sent

	mu      sync.Mutex // serializes Set, Status and Close; guards the fields below
	closed  bool
	peers   map[key.NodePublic]*peer
	clients map[string]*relayClient // by clientID
}

// New returns a Proxy carrying no paths.
func New(cfg Config) (*Proxy, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	px := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger,
		wg:      netip.AddrPortFrom(loopback, cfg.WireGuardPort),
		peers:   map[key.NodePublic]*peer{},
		clients: map[string]*relayClient{},
	}
	px.m = newMetrics(px)
	if cfg.Registry != nil {
		if err := cfg.Registry.Register(px.m); err != nil {
			return nil, fmt.Errorf("registering the relay proxy's metrics: %w", err)
		}
	}
	return px, nil
}

// nextCounter returns a bind counter: the Unix time in nanoseconds, or the last
// counter plus one if that is not greater, so counters increase strictly within the
// process and across restarts.
func (px *Proxy) nextCounter() uint64 {
	for {
		last := px.counter.Load()
		c := max(uint64(time.Now().UnixNano()), last+1)
		if px.counter.CompareAndSwap(last, c) {
			return c
		}
	}
}

// Set makes the proxy carry exactly these paths, at most one per peer, and returns
// the loopback endpoint WireGuard must use for each peer. A peer keeps its loopback
// endpoint as long as it stays in paths, even when its mode or relay changes; an
// unchanged path keeps its state (binding, connection). Peers not in paths lose
// their endpoint: its socket is closed. If a path is invalid, or a socket cannot be
// opened, Set returns an error naming the peer and changes nothing. Set never waits
// for the network: binds and framed dials happen in the background (see Status).
func (px *Proxy) Set(paths []Path) (map[key.NodePublic]netip.AddrPort, error) {
	px.mu.Lock()
	defer px.mu.Unlock()
	if px.closed {
		return nil, fmt.Errorf("setting relay paths: %w", net.ErrClosed)
	}
	seen := make(map[key.NodePublic]bool, len(paths))
	type sessionSide struct {
		relay netip.AddrPort
		id    session.ID
		side  session.Side
	}
	sides := map[sessionSide]bool{}
	relayURLs := map[key.RelayPublic][]string{}
	for i := range paths {
		pa := &paths[i]
		if seen[pa.Peer] {
			return nil, fmt.Errorf("relay path for peer %s: %w: more than one path", pa.Peer, ErrInvalidPath)
		}
		seen[pa.Peer] = true
		if err := pa.Validate(); err != nil {
			return nil, fmt.Errorf("relay path for peer %s: %w", pa.Peer, err)
		}
		if pa.Mode == ModeUDP {
			// A side binds from one socket; two would take the binding from each other.
			ss := sessionSide{pa.Relay, pa.Session, pa.Side}
			if sides[ss] {
				return nil, fmt.Errorf("relay path for peer %s: %w: session %s side %s on %s is another peer's path",
					pa.Peer, ErrInvalidPath, pa.Session, pa.Side, pa.Relay)
			}
			sides[ss] = true
			continue
		}
		if px.cfg.Machine.IsZero() {
			return nil, fmt.Errorf("relay path for peer %s: %w: framed relay but no machine key configured", pa.Peer, ErrInvalidPath)
		}
		// One connection per relay: a second one would replace the first on the
		// relay, so every path through a relay must name the same URLs.
		if urls, ok := relayURLs[pa.RelayKey]; ok && !slices.Equal(urls, pa.URLs) {
			return nil, fmt.Errorf("relay path for peer %s: %w: other URLs for relay %s than another peer's path",
				pa.Peer, ErrInvalidPath, pa.RelayKey)
		}
		relayURLs[pa.RelayKey] = pa.URLs
	}

	// Prepare every socket and backend first, so that a failure changes nothing.
	type change struct {
		p     *peer
		fresh bool
		b     backend
	}
	var changes []change
	newClients := map[string]*relayClient{}
	backends := make(map[key.NodePublic]backend, len(paths)) // the new state
	undo := func() {
		for _, c := range changes {
			c.b.stop()
			if c.fresh {
				c.p.lo.Close()
			}
		}
	}
	for i := range paths {
		pa := paths[i]
		pa.URLs = slices.Clone(pa.URLs)
		p := px.peers[pa.Peer]
		if p != nil {
			if cur := p.backend(); cur != nil && cur.path().same(&pa) {
				backends[pa.Peer] = cur
				continue
			}
		}
		fresh := p == nil
		if fresh {
			var err error
			if p, err = px.newPeer(pa.Peer); err != nil {
				undo()
				return nil, err
			}
		}
		b, err := px.newBackend(p, &pa, newClients)
		if err != nil {
			if fresh {
				p.lo.Close()
			}
			undo()
			return nil, fmt.Errorf("relay path for peer %s: %w", pa.Peer, err)
		}
		backends[pa.Peer] = b
		changes = append(changes, change{p, fresh, b})
	}

	// Commit. Relay clients learn their peers first, so a packet arriving on a new
	// path finds its loopback endpoint.
	for id, rc := range newClients {
		px.clients[id] = rc
	}
	dispatch := map[*relayClient]map[key.NodePublic]*peer{}
	for _, c := range changes {
		if c.fresh {
			px.peers[c.p.key] = c.p
		}
	}
	for k, b := range backends {
		if fb, ok := b.(*framedPath); ok {
			if dispatch[fb.rc] == nil {
				dispatch[fb.rc] = map[key.NodePublic]*peer{}
			}
			dispatch[fb.rc][k] = px.peers[k]
		}
	}
	for _, rc := range px.clients {
		rc.setPeers(dispatch[rc])
	}
	for _, c := range changes {
		c.b.start()
		if old := c.p.swap(c.b); old != nil {
			old.stop()
			px.log.Info("relay proxy: peer path changed", "peer", c.p.key, "path", c.b.path().describe())
		} else {
			px.log.Info("relay proxy: peer relayed", "peer", c.p.key, "path", c.b.path().describe(), "endpoint", c.p.local)
		}
		if c.fresh {
			go c.p.readLoop()
		}
	}
	for k, p := range px.peers {
		if _, ok := backends[k]; !ok {
			p.close()
			delete(px.peers, k)
			px.log.Info("relay proxy: peer no longer relayed", "peer", k)
		}
	}
	// Close unused clients before starting new ones: a relay whose URLs changed
	// must not see two connections of this machine.
	for id, rc := range px.clients {
		if dispatch[rc] == nil {
			rc.close()
			delete(px.clients, id)
		}
	}
	for _, rc := range newClients {
		rc.start()
	}
	out := make(map[key.NodePublic]netip.AddrPort, len(px.peers))
	for k, p := range px.peers {
		out[k] = p.local
	}
	return out, nil
}

// describe is a path for the logs, without its token.
func (p *Path) describe() string {
	if p.Mode == ModeUDP {
		return fmt.Sprintf("udp %s session %s side %s", p.Relay, p.Session, p.Side)
	}
	return fmt.Sprintf("framed %s %s", p.RelayKey, strings.Join(p.URLs, " "))
}

// newBackend prepares, without starting it, the backend of pa for p. Framed relay
// clients that do not exist yet are created in newClients.
func (px *Proxy) newBackend(p *peer, pa *Path, newClients map[string]*relayClient) (backend, error) {
	if pa.Mode == ModeUDP {
		return newUDPPath(p, pa)
	}
	id := clientID(pa)
	rc := px.clients[id]
	if rc == nil {
		rc = newClients[id]
	}
	if rc == nil {
		rc = newRelayClient(px, pa)
		newClients[id] = rc
	}
	return &framedPath{p: p, cfg: *pa, rc: rc}, nil
}

// PeerStatus is how one peer's path is doing. Tx counts packets from WireGuard to
// the relay, Rx from the relay to WireGuard, bytes being UDP payload (WireGuard
// packet) bytes; they count over the peer's whole time in the proxy, across path
// changes.
type PeerStatus struct {
	Peer key.NodePublic
	Mode Mode
	// Transport is "udp", "tcp" or "ws" while the path is up (UDP: the relay acked
	// a bind; framed: connected), else "".
	Transport string
	// Bound is, for UDP, whether the relay acked a recent bind; for framed,
	// whether the relay connection is up.
	Bound bool
	// PeerBound is, for UDP, whether the relay's last ack said the other side is
	// bound too; always false for framed paths.
	PeerBound                              bool
	TxPackets, RxPackets, TxBytes, RxBytes uint64
	// LastError is the last error on the peer's current path, or "".
	LastError string
}

// Status returns the status of every peer's path, sorted by peer key.
func (px *Proxy) Status() []PeerStatus {
	px.mu.Lock()
	defer px.mu.Unlock()
	out := make([]PeerStatus, 0, len(px.peers))
	for _, p := range px.peers {
		st := PeerStatus{
			Peer:      p.key,
			TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(),
			RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(),
			LastError: p.lastErr.get(),
		}
		if b := p.backend(); b != nil {
			st.Mode = b.path().Mode
			b.status(&st)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Peer.Raw(), out[j].Peer.Raw()
		return bytes.Compare(a[:], b[:]) < 0
	})
	return out
}

// Close stops carrying packets: it closes every socket and relay connection and
// waits for the proxy's goroutines to end. Set fails after Close.
func (px *Proxy) Close() error {
	px.mu.Lock()
	if px.closed {
		px.mu.Unlock()
		return nil
	}
	px.closed = true
	peers, clients := px.peers, px.clients
	px.peers, px.clients = map[key.NodePublic]*peer{}, map[string]*relayClient{}
	px.mu.Unlock()
	for _, p := range peers {
		p.close()
	}
	for _, rc := range clients {
		rc.close()
	}
	if px.cfg.Registry != nil {
		px.cfg.Registry.Unregister(px.m)
	}
	return nil
}

// backend carries one peer's packets to and from its relay.
type backend interface {
	path() *Path
	// start starts the backend's goroutines. It is called at most once.
	start()
	// send sends a packet from WireGuard to the relay, or drops and counts it.
	send(pkt []byte)
	// stop closes the backend's sockets and waits for its goroutines; it may be
	// called without start.
	stop()
	// status fills in st's Transport, Bound and PeerBound.
	status(st *PeerStatus)
}

// slot holds a backend for atomic.Pointer.
type slot struct{ b backend }

// peer is one relayed peer: its loopback endpoint and its current backend.
type peer struct {
	px    *Proxy
	key   key.NodePublic
	lo    *net.UDPConn   // the loopback endpoint, L
	local netip.AddrPort // lo's address, WireGuard's endpoint for the peer
	be    atomic.Pointer[slot]
	done  chan struct{} // closed when readLoop returns

	txPackets, txBytes, rxPackets, rxBytes atomic.Uint64
	lastErr                                errBox
}

func (px *Proxy) newPeer(k key.NodePublic) (*peer, error) {
	lo, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		return nil, fmt.Errorf("opening the loopback endpoint of peer %s: %w", k, err)
	}
	return &peer{
		px:    px,
		key:   k,
		lo:    lo,
		local: lo.LocalAddr().(*net.UDPAddr).AddrPort(),
		done:  make(chan struct{}),
	}, nil
}

func (p *peer) backend() backend {
	if s := p.be.Load(); s != nil {
		return s.b
	}
	return nil
}

// swap makes b the peer's backend and returns the previous one. The last error
// belonged to the previous path, so it is cleared.
func (p *peer) swap(b backend) backend {
	old := p.be.Swap(&slot{b})
	p.lastErr.clear()
	if old == nil {
		return nil
	}
	return old.b
}

// close stops the peer's backend, closes its loopback endpoint and waits for its
// reader. The caller must have started readLoop.
func (p *peer) close() {
	if s := p.be.Swap(nil); s != nil {
		s.b.stop()
	}
	p.lo.Close()
	<-p.done
}

// readLoop carries datagrams from WireGuard to the peer's backend until lo closes.
func (p *peer) readLoop() {
	defer close(p.done)
	buf := make([]byte, maxPacket)
	for {
		n, from, err := p.lo.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.lastErr.set(fmt.Errorf("reading from WireGuard: %w", err))
			time.Sleep(10 * time.Millisecond) // never spin on a persistent error
			continue
		}
		if from.Addr().Unmap() != p.px.wg.Addr() || from.Port() != p.px.wg.Port() {
			p.px.m.drop(dropForeignSource)
			continue
		}
		s := p.be.Load()
		if s == nil {
			p.px.m.drop(dropNoPath)
			continue
		}
		s.b.send(buf[:n])
	}
}

// sent counts a packet the backend sent to the relay over path.
func (p *peer) sent(path int, n int) {
	p.txPackets.Add(1)
	p.txBytes.Add(uint64(n))
	p.px.m.packet(path, dirOut, n)
}

// deliver writes a packet from the relay to WireGuard, from the peer's loopback
// endpoint.
func (p *peer) deliver(pkt []byte, path int) {
	if _, err := p.lo.WriteToUDPAddrPort(pkt, p.px.wg); err != nil {
		p.px.m.drop(dropDeliverError)
		if !errors.Is(err, net.ErrClosed) {
			p.lastErr.set(fmt.Errorf("delivering to WireGuard: %w", err))
		}
		return
	}
	p.rxPackets.Add(1)
	p.rxBytes.Add(uint64(len(pkt)))
	p.px.m.packet(path, dirIn, len(pkt))
}

// errBox holds the last error of a peer.
type errBox struct {
	mu  sync.Mutex
	msg string
}

func (e *errBox) set(err error) {
	e.mu.Lock()
	e.msg = err.Error()
	e.mu.Unlock()
}

func (e *errBox) clear() {
	e.mu.Lock()
	e.msg = ""
	e.mu.Unlock()
}

func (e *errBox) get() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.msg
}
