package framed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
)

// Defaults of Config.
const (
	DefaultKeepAlive    = 30 * time.Second
	DefaultQueueLen     = 256
	defaultWriteTimeout = 10 * time.Second
	// maxWatch bounds how many destinations one client is watched for (peer-gone).
	maxWatch = 4096
	// maxMeshBacklog bounds the presence frames waiting on a mesh link; past it
	// the link is closed and the peer relay reconnects for a fresh snapshot.
	maxMeshBacklog = 1 << 20
)

// helloMesh is bit 0 of the hello's first byte: the client is a relay of the region.
const helloMesh = 1

// Authorizer decides who may use the relay. It is called once per connection, after
// the Noise handshake proved the client's machine key, and must be safe for
// concurrent use.
type Authorizer interface {
	// Authorize returns what machine may do, or an error to refuse it. The
	// error's text (its first MaxRefusalLen bytes) goes back to the client,
	// encrypted to its machine key, as the reason of its RefusedError: say what
	// the client's operator can act on.
	Authorize(machine key.MachinePublic) (Grant, error)
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(machine key.MachinePublic) (Grant, error)

// Authorize calls f.
func (f AuthorizerFunc) Authorize(m key.MachinePublic) (Grant, error) { return f(m) }

// Grant is what an authorized client may do.
type Grant struct {
	// Tenant scopes the client: it is addressed, and reaches peers, only within it.
	// At most MaxTenantLen bytes.
	Tenant string
	// Node is the client's node (WireGuard) key, its address on the relay.
	Node key.NodePublic
	// Peers are the node keys it may send to. It is asked on every packet, so an
	// authorizer may update it in place (safely for concurrent use).
	Peers Peers
	// Mesh marks another relay of the region; Tenant, Node and Peers are ignored.
	// The client must also say it is a relay (Server.Mesh does).
	Mesh bool
}

// Peers is the set of node keys a client may reach.
type Peers interface {
	Allowed(key.NodePublic) bool
}

// PeerSet is a fixed Peers.
type PeerSet map[key.NodePublic]struct{}

// Allowed reports whether k is in the set.
func (p PeerSet) Allowed(k key.NodePublic) bool {
	_, ok := p[k]
	return ok
}

// Config configures a Server.
type Config struct {
	// Key is the relay's static key; clients pin its public half.
	Key key.Private
	// Authorizer decides what each client may do. Required.
	Authorizer Authorizer
	// KeepAlive is how often an idle connection gets a keepalive frame; 0 is
	// DefaultKeepAlive.
	KeepAlive time.Duration
	// ReadTimeout closes a connection that sent nothing for that long; 0 is
	// 2.5 × KeepAlive.
	ReadTimeout time.Duration
	// QueueLen is the per-client send queue in frames; 0 is DefaultQueueLen.
	QueueLen int
	// Logf, if set, logs connections that end with an error.
	Logf func(format string, args ...any)
}

// peerID is a client's address on the relay.
type peerID struct {
	tenant string
	node   key.NodePublic
}

// Server relays frames between authenticated clients of a tenant, and to and from
// the other relays of its region. It serves HTTP requests to noiseconn.Path, HTTP
// Upgrade (TCP) and WebSocket alike.
type Server struct {
	cfg     Config
	ns      noiseconn.Server
	metrics *metrics

	mu       sync.RWMutex
	closed   bool
	all      map[*client]struct{}
	clients  map[peerID]*client
	links    map[*client]struct{}
	remote   map[peerID]*client // the mesh link that announced the peer last
	watchers map[peerID]map[*client]struct{}
	wg       sync.WaitGroup
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Key.IsZero() {
		return nil, errors.New("framed relay: no relay key")
	}
	if cfg.Authorizer == nil {
		return nil, errors.New("framed relay: no authorizer")
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = cfg.KeepAlive * 5 / 2
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	priv, pub := cfg.Key.Raw(), cfg.Key.MachinePublic().Raw()
	s := &Server{
		cfg:      cfg,
		ns:       noiseconn.Server{Key: noise.DHKey{Private: priv[:], Public: pub[:]}, MaxMessage: MaxFrame},
		metrics:  newMetrics(),
		all:      map[*client]struct{}{},
		clients:  map[peerID]*client{},
		links:    map[*client]struct{}{},
		remote:   map[peerID]*client{},
		watchers: map[peerID]map[*client]struct{}{},
	}
	return s, nil
}

// Public is the relay key clients pin.
func (s *Server) Public() key.RelayPublic {
	return key.RelayPublicFromRaw(s.cfg.Key.MachinePublic().Raw())
}

// machineKeyOf is the relay key as noiseconn pins it.
func machineKeyOf(k key.RelayPublic) key.MachinePublic { return key.MachinePublicFromRaw(k.Raw()) }

// ServeHTTP runs the handshake on r (HTTP Upgrade or WebSocket) and, if the
// Authorizer accepts the client, registers its connection and returns: the
// connection is served in the background until it ends or s closes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var grant Grant
	var refusal error
	authorize := func(m key.MachinePublic, hello []byte) ([]byte, bool) {
		g, err := s.cfg.Authorizer.Authorize(m)
		wantMesh := len(hello) > 0 && hello[0]&helloMesh != 0
		switch {
		case err != nil:
			refusal = err
		case g.Mesh != wantMesh:
			refusal = fmt.Errorf("mesh flag %v, authorizer says %v", wantMesh, g.Mesh)
		case !g.Mesh && (g.Node.IsZero() || g.Peers == nil || len(g.Tenant) > MaxTenantLen):
			refusal = errors.New("authorizer gave no node key, no peers, or a tenant ID too long")
		}
		if refusal != nil {
			s.metrics.refused.Add(1)
			return refusalReply(refusal), false
		}
		grant = g
		return nil, true
	}
	transport := TransportTCP
	var conn *noiseconn.Conn
	var err error
	if isWebSocket(r) {
		transport = TransportWS
		conn, err = acceptWS(w, r, &s.ns, authorize, s.cfg.ReadTimeout)
	} else {
		conn, err = s.ns.Upgrade(w, r, authorize)
	}
	if err != nil {
		if refusal != nil {
			err = fmt.Errorf("%w: %v", err, refusal)
		}
		s.logf("framed relay: %v", err)
		return
	}
	c := s.newClient(conn, transport, grant)
	if !s.register(c) {
		c.close()
		conn.Close()
		return
	}
	// The connection outlives the request. Serving it from a goroutine of its
	// own lets net/http free what it keeps per request (buffers, headers) and
	// drops the stack that the TLS and Noise handshakes grew.
	go s.serve(c)
}

// MaxRefusalLen bounds the reason a refused client gets.
const MaxRefusalLen = 512

// refusalReply is the payload of a refusal's handshake reply: the reason, UTF-8.
func refusalReply(err error) []byte {
	r := err.Error()
	return []byte(strings.ToValidUTF8(r[:min(len(r), MaxRefusalLen)], ""))
}

// Mesh links s to another relay of its region at cfg.URL (cfg.Machine is ignored:
// the link authenticates with s's key). It returns once the link is up; the link
// then runs until it fails, ctx ends or s closes, and done is closed then. Relinking
// is the caller's business.
func (s *Server) Mesh(ctx context.Context, cfg DialConfig) (done <-chan struct{}, err error) {
	cfg.Machine = s.cfg.Key
	conn, transport, err := dialNoise(ctx, cfg, []byte{helloMesh})
	if err != nil {
		return nil, fmt.Errorf("linking to mesh peer: %w", err)
	}
	c := s.newClient(conn, transport, Grant{Mesh: true})
	if !s.register(c) {
		c.close()
		conn.Close()
		return nil, fmt.Errorf("linking to mesh peer: %w", net.ErrClosed)
	}
	ch := make(chan struct{})
	stop := context.AfterFunc(ctx, c.close)
	go func() {
		defer close(ch)
		defer stop()
		s.serve(c)
	}()
	return ch, nil
}

// Close closes every connection and waits for them to end. ServeHTTP calls after
// Close return at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.all {
		c.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// serve reads the frames of c, registered, until it ends, then unregisters it
// and closes its connection.
func (s *Server) serve(c *client) {
	defer s.wg.Done()
	err := c.readLoop()
	c.close()
	c.writers.Wait()
	s.unregister(c)
	c.conn.Close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.logf("framed relay: %s %s: %v", c.transport, c.name(), err)
	}
}

// Disconnect closes the connection of the node addressed (tenant, node), if it is
// connected, and reports whether it was: for a node the authorizer no longer
// grants, or whose node key changed (a client keeps the address it connected with).
func (s *Server) Disconnect(tenant string, node key.NodePublic) bool {
	s.mu.RLock()
	c := s.clients[peerID{tenant: tenant, node: node}]
	s.mu.RUnlock()
	if c == nil {
		return false
	}
	c.close()
	return true
}

// register adds c to s, unless s is closed; serve(c) must follow.
func (s *Server) register(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	s.all[c] = struct{}{}
	if c.mesh {
		s.links[c] = struct{}{}
		for id := range s.clients {
			c.enqueueCtrl(MeshPresenceFrame(id.tenant, id.node, true))
		}
	} else {
		if old := s.clients[c.id]; old != nil {
			old.close() // the newest connection of a node wins
		}
		s.clients[c.id] = c
		for l := range s.links {
			l.enqueueCtrl(MeshPresenceFrame(c.id.tenant, c.id.node, true))
		}
	}
	s.metrics.connected(c.transport, c.mesh, 1)
	return true
}

func (s *Server) unregister(c *client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.all, c)
	s.metrics.connected(c.transport, c.mesh, -1)
	if c.mesh {
		delete(s.links, c)
		for id, l := range s.remote {
			if l == c {
				delete(s.remote, id)
				if s.clients[id] == nil {
					s.notifyGoneLocked(id)
				}
			}
		}
	} else {
		for id := range c.watching {
			if w := s.watchers[id]; w != nil {
				delete(w, c)
				if len(w) == 0 {
					delete(s.watchers, id)
				}
			}
		}
		if s.clients[c.id] == c {
			delete(s.clients, c.id)
			for l := range s.links {
				l.enqueueCtrl(MeshPresenceFrame(c.id.tenant, c.id.node, false))
			}
			if s.remote[c.id] == nil {
				s.notifyGoneLocked(c.id)
			}
		}
	}
}

// notifyGoneLocked tells the clients that sent to id that it is gone.
func (s *Server) notifyGoneLocked(id peerID) {
	w := s.watchers[id]
	if w == nil {
		return
	}
	delete(s.watchers, id)
	f := PeerGoneFrame(id.node, GoneDisconnected)
	for c := range w {
		delete(c.watching, id)
		c.enqueue(f)
	}
}

// route delivers a send-packet frame msg (owned by the caller, rewritten in place)
// from client c.
func (s *Server) route(c *client, msg []byte, dst key.NodePublic, pkt []byte) {
	if !c.peers.Allowed(dst) {
		s.metrics.drop(dropNotAllowed)
		c.enqueue(ErrorFrame(CodeNotAllowed, dst, "not allowed"))
		return
	}
	id := peerID{c.id.tenant, dst}
	s.mu.RLock()
	to := s.clients[id]
	link := s.remote[id]
	_, watched := s.watchers[id][c]
	s.mu.RUnlock()
	if !watched && (to != nil || link != nil) && len(c.watching) < maxWatch {
		// c watches dst from before the packet can reach it: looking dst up and
		// adding the watch under one lock means that dst's unregister, before or
		// after, tells c (peer-gone) either way. Watching after the delivery let
		// dst leave in between, and c never heard of it.
		s.mu.Lock()
		to, link = s.clients[id], s.remote[id]
		if _, live := s.all[c]; live && (to != nil || link != nil) {
			w := s.watchers[id]
			if w == nil {
				w = map[*client]struct{}{}
				s.watchers[id] = w
			}
			w[c] = struct{}{}
			if c.watching == nil {
				c.watching = map[peerID]struct{}{}
			}
			c.watching[id] = struct{}{}
		}
		s.mu.Unlock()
	}
	switch {
	case to != nil:
		// A send-packet frame and its recv-packet frame have the same size: only the
		// type and the key change.
		msg[0] = byte(FrameRecvPacket)
		src := c.id.node.Raw()
		copy(msg[HeaderLen:], src[:])
		to.enqueue(msg)
		s.metrics.relayed.Add(1)
	case link != nil:
		link.enqueue(MeshForwardFrame(c.id.tenant, c.id.node, dst, pkt))
		s.metrics.meshForwards.Add(1)
	default:
		s.metrics.drop(dropUnknownPeer)
		c.enqueue(PeerGoneFrame(dst, GoneNotHere))
	}
}

// meshFrame handles a frame from mesh link l.
func (s *Server) meshFrame(l *client, f Frame) error {
	switch f.Type {
	case FrameKeepAlive:
		return nil
	case FrameMeshPresence:
		tenant, node, present, err := f.MeshPresence()
		if err != nil {
			return err
		}
		id := peerID{tenant, node}
		s.mu.Lock()
		if present {
			s.remote[id] = l
		} else if s.remote[id] == l {
			delete(s.remote, id)
			if s.clients[id] == nil {
				s.notifyGoneLocked(id)
			}
		}
		s.mu.Unlock()
		return nil
	case FrameMeshForward:
		tenant, src, dst, pkt, err := f.MeshForward()
		if err != nil {
			return err
		}
		s.mu.RLock()
		to := s.clients[peerID{tenant, dst}]
		s.mu.RUnlock()
		if to == nil {
			// Never forwarded again: one hop only.
			s.metrics.drop(dropUnknownPeer)
			return nil
		}
		to.enqueue(RecvPacketFrame(src, pkt))
		s.metrics.relayed.Add(1)
		return nil
	}
	return fmt.Errorf("%v frame from a mesh peer: %w", f.Type, ErrMalformed)
}

// isTimeout reports a read deadline.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}
