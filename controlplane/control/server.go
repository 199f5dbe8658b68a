// Package control is the controller's side of the agent control channel: it
// authenticates agents by machine key during the Noise handshake (enrolling new
// ones with an enrollment key), sends each connected agent its full network map and
// then deltas, and takes the agent's reports (endpoints, rotated node keys). A
// change to one node costs work proportional to the connected nodes that see it.
// It never writes state except through controlplane/state, and never sends a node
// anything about another tenant or another network.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/flynn/noise"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/model"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/state"
)

// ProtocolVersion is the version of controlpb this controller speaks.
const ProtocolVersion = 1

// Refusal codes in ServerHello.Code and Goodbye.Code; docs/control.md lists them.
const (
	CodeBadHello       = "bad_hello"
	CodeVersion        = "version"
	CodeMachineUnknown = "machine_unknown"
	CodeNodeExpired    = "node_expired"
	CodeEnrollRefused  = "enroll_refused"
	CodeNodeDeleted    = "node_deleted"
	CodeReplaced       = "replaced"
	CodeBadMessage     = "bad_message"
	CodeShutdown       = "shutdown"
)

// Options tune a Server.
type Options struct {
	// Key is the controller's Noise static key pair.
	Key noise.DHKey
	Log *slog.Logger
	// Registry, when set, gets the channel's metrics.
	Registry prometheus.Registerer
	// KeepAlive is how often an idle connection carries a keep-alive (30 s by
	// default); a side that hears nothing for three of them drops the connection.
	KeepAlive time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Server serves the control channel. Mount it at noiseconn.Path.
type Server struct {
	st      *state.State
	opts    Options
	log     *slog.Logger
	noise   *noiseconn.Server
	hub     *hub
	m       metrics
	reports reports

	mu       sync.Mutex
	closed   bool
	sessions sync.WaitGroup
	stop     chan struct{} // ends the hub's worker
	stopOnce sync.Once
}

// New returns a Server over st and subscribes it to st's node changes.
func New(st *state.State, opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		st: st, opts: opts, log: opts.Log.With("component", "control"),
		noise: &noiseconn.Server{Key: opts.Key, Now: opts.Now},
		m:     newMetrics(opts.Registry),
		stop:  make(chan struct{}),
	}
	s.hub = newHub(st, s.log)
	go s.hub.run(s.stop)
	s.m.connected = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cvlan_control_sessions", Help: "Agents connected over the control channel.",
	}, func() float64 { return float64(s.hub.connected()) })
	if opts.Registry != nil {
		opts.Registry.MustRegister(s.m.connected)
	}
	st.Watch(func(w *state.World, changes state.Changes) {
		for _, c := range changes.Nodes {
			if c.New == nil {
				s.reports.forget(c.Old.ID)
			}
		}
		s.m.fanout.Add(float64(s.hub.apply(w, changes)))
	})
	return s
}

// Close ends every session with a goodbye and waits for them to finish; later
// connections are refused. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.hub.mu.Lock()
	s.hub.closing = true // sessions still in their handshake end at start
	for _, o := range s.hub.byNode {
		o.goodbye(CodeShutdown, "controller is shutting down")
	}
	for _, o := range s.hub.relays {
		o.goodbye(CodeShutdown, "controller is shutting down")
	}
	s.hub.mu.Unlock()
	s.sessions.Wait()
	s.stopOnce.Do(func() { close(s.stop) })
}

func goodbyeMsg(code, reason string) *controlpb.ServerMessage {
	return &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_Goodbye{Goodbye: &controlpb.Goodbye{Code: code, Reason: reason}}}
}

// ServeHTTP runs the handshake and, if the agent is admitted, its session.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, `{"error":"controller is shutting down"}`, http.StatusServiceUnavailable)
		return
	}
	s.sessions.Add(1)
	s.mu.Unlock()
	defer s.sessions.Done()

	var (
		node  *model.Node
		relay *model.Relay
	)
	conn, err := s.noise.Upgrade(w, r, func(peer key.MachinePublic, hello []byte) ([]byte, bool) {
		var reply *controlpb.ServerHello
		if isRelayHello(hello) {
			reply, relay = s.admitRelay(peer)
		} else {
			reply, node = s.admit(r.Context(), peer, hello)
		}
		b, err := proto.Marshal(reply)
		if err != nil {
			return nil, false
		}
		return b, node != nil || relay != nil
	})
	if err != nil {
		s.m.handshakes.WithLabelValues("refused").Inc()
		s.log.Info("agent handshake refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	s.m.handshakes.WithLabelValues("ok").Inc()
	if relay != nil {
		s.serveRelay(conn, relay)
		return
	}
	s.serve(conn, node)
}

// isRelayHello says whether a hello is a relay's; one that does not decode is an
// agent's, and admit refuses it with the reason.
func isRelayHello(b []byte) bool {
	var hello controlpb.ClientHello
	return proto.Unmarshal(b, &hello) == nil && hello.GetRelay() && hello.GetProtocolVersion() == ProtocolVersion
}

// admit decides on an agent's hello: a known machine logs in, an unknown one may
// enroll with an enrollment key. It returns the reply and, when admitted, the node.
func (s *Server) admit(ctx context.Context, peer key.MachinePublic, b []byte) (*controlpb.ServerHello, *model.Node) {
	refuse := func(code, format string, args ...any) (*controlpb.ServerHello, *model.Node) {
		msg := fmt.Sprintf(format, args...)
		s.log.Info("refusing agent", "machine", peer, "code", code, "reason", msg)
		return &controlpb.ServerHello{ProtocolVersion: ProtocolVersion, Code: code, Error: msg}, nil
	}
	var hello controlpb.ClientHello
	if err := proto.Unmarshal(b, &hello); err != nil {
		return refuse(CodeBadHello, "hello does not decode: %v", err)
	}
	if hello.GetProtocolVersion() != ProtocolVersion {
		return refuse(CodeVersion, "agent speaks protocol version %d, this controller speaks %d", hello.GetProtocolVersion(), ProtocolVersion)
	}
	nk, err := nodeKey(hello.GetNodeKey())
	if err != nil {
		return refuse(CodeBadHello, "node_key: %v", err)
	}
	_, n := s.st.World().NodeByMachineKey(peer)
	switch {
	case n == nil && hello.GetEnroll() == nil:
		return refuse(CodeMachineUnknown, "machine %s is not enrolled here (never enrolled, or its node was deleted); enroll it with an enrollment key", peer)
	case n == nil:
		name := hello.GetEnroll().GetName()
		if name == "" {
			name = hello.GetHostname()
		}
		n, _, err = s.st.Enroll(ctx, state.Enrollment{Secret: hello.GetEnroll().GetSecret(), Name: name, MachineKey: peer, NodeKey: nk})
		if err != nil {
			return refuse(CodeEnrollRefused, "enrollment refused: %v", err)
		}
		s.log.Info("node enrolled", "node", n.ID, "name", n.Name, "tenant", n.TenantID, "ipv4", n.IPv4)
	case !n.KeyExpiry.IsZero() && !s.opts.Now().Before(n.KeyExpiry):
		return refuse(CodeNodeExpired, "node %s expired at %s", n.Name, n.KeyExpiry.UTC().Format(time.RFC3339))
	}
	now := s.opts.Now().UTC()
	n, err = s.st.UpdateNode(ctx, s.actor(n), n.TenantID, n.ID, func(m *model.Node) error {
		if !m.NodeKey.Equal(nk) {
			// The machine key authenticated the agent; its node key is its own to
			// choose. This also completes a rotation whose report was lost.
			m.NodeKey, m.RotateRequestedAt = nk, time.Time{}
		}
		m.LastSeen = now
		return nil
	})
	if err != nil {
		return refuse(CodeBadHello, "recording the connection: %v", err)
	}
	return &controlpb.ServerHello{ProtocolVersion: ProtocolVersion, NodeId: n.ID, NodeName: n.Name}, n
}

func (s *Server) actor(n *model.Node) state.Actor { return state.Actor("node:" + n.ID) }

func nodeKey(b []byte) (key.NodePublic, error) {
	if len(b) != key.Len {
		return key.NodePublic{}, fmt.Errorf("%d bytes, want %d", len(b), key.Len)
	}
	k := key.NodePublicFromRaw([key.Len]byte(b))
	if k.IsZero() {
		return key.NodePublic{}, errors.New("all zero")
	}
	return k, nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Limits on what an agent may report.
const maxEndpoints = 64

// serve runs one admitted agent's session until either side ends it.
func (s *Server) serve(conn *noiseconn.Conn, node *model.Node) {
	defer conn.Close()
	log := s.log.With("node", node.ID, "name", node.Name)
	ob := newOutbox(node)
	defer s.hub.remove(ob)
	defer ob.end()
	defer func() {
		if t := s.st.World().Tenant(node.TenantID); t == nil || t.Nodes.ByID(node.ID) == nil {
			s.reports.forget(node.ID) // a report that raced the node's deletion
		}
	}()
	log.Info("agent connected", "remote", conn.RemoteAddr())

	// Registered first, then the snapshot: every change after the snapshot is
	// queued, and one that made both is applied twice, which is harmless.
	w := s.st.World()
	t := w.Tenant(node.TenantID)
	var n *model.Node
	if t != nil {
		n = t.Nodes.ByID(node.ID)
	}
	if n == nil {
		s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_Goodbye{Goodbye: &controlpb.Goodbye{Code: CodeNodeDeleted, Reason: "node was deleted"}}})
		return
	}
	full, old, err := s.hub.start(w, t, n, ob)
	if old != nil {
		old.goodbye(CodeReplaced, "replaced by a newer connection of the same node")
	}
	switch {
	case errors.Is(err, errNodeGone):
		s.send(conn, goodbyeMsg(CodeNodeDeleted, "node was deleted"))
		return
	case errors.Is(err, errShutdown):
		s.send(conn, goodbyeMsg(CodeShutdown, "controller is shutting down"))
		return
	case err != nil:
		log.Error("compiling the tenant's policy", "err", err)
		s.send(conn, goodbyeMsg(CodeShutdown, "the controller cannot compile this tenant's policy; retrying later"))
		return
	}
	seq := uint64(1)
	if err := s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_FullMap{FullMap: full}}); err != nil {
		log.Info("sending network map failed", "err", err)
		return
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		s.read(conn, ob, n, log)
	}()
	// Closing the connection ends the reader; wait for it so that a Close of the
	// Server returns only when no session touches the state any more.
	defer func() { <-readDone }()
	defer conn.Close()

	tick := time.NewTicker(s.opts.KeepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ob.done:
			// The reader ended the session, perhaps with a goodbye saying why.
			if _, bye := ob.take(); bye != nil {
				s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_Goodbye{Goodbye: bye}})
			}
			return
		case <-tick.C:
			if err := s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_KeepAlive{KeepAlive: &controlpb.KeepAlive{}}}); err != nil {
				log.Info("agent connection lost", "err", err)
				return
			}
		case <-ob.wake:
			d, bye := ob.take()
			if bye != nil {
				s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_Goodbye{Goodbye: bye}})
				log.Info("agent disconnected", "code", bye.Code, "reason", bye.Reason)
				return
			}
			if d == nil {
				continue
			}
			seq++
			d.Seq = seq
			if err := s.send(conn, &controlpb.ServerMessage{Msg: &controlpb.ServerMessage_Delta{Delta: d}}); err != nil {
				log.Info("agent connection lost", "err", err)
				return
			}
			s.m.deltas.Inc()
		}
	}
}

func (s *Server) send(conn *noiseconn.Conn, m *controlpb.ServerMessage) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	conn.SetWriteDeadline(time.Now().Add(s.opts.KeepAlive))
	return conn.WriteMsg(b)
}

// read takes the agent's messages until the connection fails, then ends the
// session. A malformed message ends it with a goodbye naming the problem.
func (s *Server) read(conn *noiseconn.Conn, ob *outbox, n *model.Node, log *slog.Logger) {
	defer ob.end()
	ctx := context.Background()
	for {
		conn.SetReadDeadline(time.Now().Add(3 * s.opts.KeepAlive))
		b, err := conn.ReadMsg()
		if err != nil {
			select {
			case <-ob.done:
			default:
				log.Info("agent connection closed", "err", err)
			}
			s.st.UpdateNode(ctx, s.actor(n), n.TenantID, n.ID, func(m *model.Node) error {
				m.LastSeen = s.opts.Now().UTC()
				return nil
			})
			return
		}
		if err := s.handle(ctx, n, b); err != nil {
			log.Warn("bad message from agent", "err", err)
			ob.goodbye(CodeBadMessage, err.Error())
			return
		}
	}
}

// handle applies one message from the agent.
func (s *Server) handle(ctx context.Context, n *model.Node, b []byte) error {
	var m controlpb.ClientMessage
	if err := proto.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("message does not decode: %w", err)
	}
	switch msg := m.Msg.(type) {
	case *controlpb.ClientMessage_KeepAlive:
		return nil
	case *controlpb.ClientMessage_Endpoints:
		eps, err := parseEndpoints(msg.Endpoints.GetEndpoints())
		if err != nil {
			return err
		}
		_, err = s.st.UpdateNode(ctx, s.actor(n), n.TenantID, n.ID, func(m *model.Node) error {
			m.Endpoints = eps
			return nil
		})
		if err != nil && !isGone(err) {
			return fmt.Errorf("storing endpoints: %w", err)
		}
		return nil
	case *controlpb.ClientMessage_Counters:
		return s.reports.put(n.ID, s.opts.Now().UTC(), msg.Counters)
	case *controlpb.ClientMessage_PathReport:
		pr := msg.PathReport
		if pr.GetFailed() > pathFramed {
			return fmt.Errorf("path_report.failed: %d is not a path (0 direct, 1 UDP relay, 2 framed relay)", pr.GetFailed())
		}
		if !model.IsID(pr.GetPeerNodeId()) {
			return fmt.Errorf("path_report.peer_node_id: %q is not a node ID", clip(pr.GetPeerNodeId()))
		}
		did := s.hub.escalate(s.st.World(), n.TenantID, n.ID, pr.GetPeerNodeId(), pr.GetFailed())
		s.log.Info("path report", "node", n.ID, "peer", pr.GetPeerNodeId(), "failed", pr.GetFailed(), "result", did)
		return nil
	case *controlpb.ClientMessage_NodeKeyRotated:
		nk, err := nodeKey(msg.NodeKeyRotated.GetNodeKey())
		if err != nil {
			return fmt.Errorf("node_key_rotated.node_key: %w", err)
		}
		_, err = s.st.UpdateNode(ctx, s.actor(n), n.TenantID, n.ID, func(m *model.Node) error {
			m.NodeKey, m.RotateRequestedAt = nk, time.Time{}
			return nil
		})
		if err != nil && !isGone(err) {
			return fmt.Errorf("storing the rotated node key: %w", err)
		}
		s.log.Info("node key rotated", "node", n.ID, "node_key", nk)
		return nil
	case nil:
		return errors.New("empty message")
	}
	return nil // a newer agent's message this controller does not know: ignore
}

func isGone(err error) bool {
	var me *model.Error
	return errors.As(err, &me) && me.Kind == model.NotFound
}

func parseEndpoints(ss []string) ([]netip.AddrPort, error) {
	if len(ss) > maxEndpoints {
		return nil, fmt.Errorf("endpoints: %d is more than %d", len(ss), maxEndpoints)
	}
	out := make([]netip.AddrPort, 0, len(ss))
	for i, e := range ss {
		ap, err := netip.ParseAddrPort(e)
		if err != nil || ap.Port() == 0 || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
			return nil, fmt.Errorf("endpoints[%d]: %q is not an address:port", i, e)
		}
		out = append(out, ap)
	}
	return out, nil
}

// metrics are the channel's Prometheus metrics.
type metrics struct {
	handshakes *prometheus.CounterVec
	deltas     prometheus.Counter
	fanout     prometheus.Counter
	connected  prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cvlan_control_handshakes_total", Help: "Agent handshakes by result (ok, refused).",
		}, []string{"result"}),
		deltas: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvlan_control_deltas_sent_total", Help: "Network map deltas sent to agents.",
		}),
		fanout: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvlan_control_fanout_total", Help: "Agent outboxes touched by node changes.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.handshakes, m.deltas, m.fanout)
	}
	return m
}
