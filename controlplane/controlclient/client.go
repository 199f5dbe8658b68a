// Package controlclient is the agent's side of the control channel: it connects to
// the controller over Noise (controlplane/noiseconn), enrolls or logs in with the
// hello its Handler gives, follows the network map (full map, then deltas) and hands
// every new map to the Handler, and reconnects with jittered exponential backoff
// when the connection fails. It keeps no state across restarts and never touches
// the kernel; the agent does both.
package controlclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/flynn/noise"
	"google.golang.org/protobuf/proto"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/controlplane/relaymap"
)

// ProtocolVersion is the version of controlpb this agent speaks.
const ProtocolVersion = 1

// Config says where the controller is and who the agent is.
type Config struct {
	URL           string
	ControllerKey key.MachinePublic
	Machine       noise.DHKey
	Log           *slog.Logger
	// KeepAlive is how often the agent sends a keep-alive (30 s by default); it
	// drops a connection that is silent for three of them.
	KeepAlive time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts (0.5 s, 30 s).
	MinBackoff, MaxBackoff time.Duration
}

// Handler is what the agent does with the controller's word. Calls are sequential.
type Handler interface {
	// Hello is the hello for the next attempt (node key; enroll while unenrolled).
	Hello() *controlpb.ClientHello
	// Connected reports that the controller admitted the agent.
	Connected(*controlpb.ServerHello)
	// Map gives each new network map: the full map of a connection, then the map
	// after each delta.
	Map(*netmap.Map)
	// Disconnected reports that a connection ended, and why.
	Disconnected(error)
}

// RelayHandler is implemented by a relay's Handler (whose Hello sets relay): it
// gets the relay's configuration, the full one of a connection and then the one
// after each delta, instead of network maps.
type RelayHandler interface {
	Relay(*relaymap.Config)
}

// RefusedError is the controller's authenticated refusal: a ServerHello or a
// Goodbye with a code (see docs/control.md).
type RefusedError struct {
	Code, Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("controller refused (%s): %s", e.Code, e.Reason)
}

// Permanent says whether retrying cannot help: the agent must stop and say why.
func (e *RefusedError) Permanent() bool {
	switch e.Code {
	case "replaced", "shutdown", "bad_message":
		return false
	}
	return true
}

// ErrNotConnected is returned by Send while no connection is up.
var ErrNotConnected = errors.New("not connected to the controller")

// Client runs the control connection.
type Client struct {
	cfg Config
	h   Handler
	log *slog.Logger

	mu   sync.Mutex
	conn *noiseconn.Conn
}

// New returns a Client; Run starts it.
func New(cfg Config, h Handler) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	return &Client{cfg: cfg, h: h, log: cfg.Log.With("component", "control")}
}

// Run connects and reconnects until ctx is done (then it returns nil) or the
// controller refuses the agent for good (then it returns the *RefusedError), or the
// controller's key does not match (noiseconn.ErrControllerKey).
func (c *Client) Run(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		admitted, err := c.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		c.h.Disconnected(err)
		var ref *RefusedError
		if errors.As(err, &ref) && ref.Permanent() || errors.Is(err, noiseconn.ErrControllerKey) {
			return err
		}
		if admitted {
			attempt = 0
		}
		wait := c.backoff(attempt)
		c.log.Warn("control connection down; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// backoff is the wait before attempt n+1: exponential, capped, with ±50% jitter so
// that agents cut off together do not return together.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.MinBackoff << min(n, 20)
	if d > c.cfg.MaxBackoff || d <= 0 {
		d = c.cfg.MaxBackoff
	}
	return d/2 + rand.N(d)
}

// Send sends one message on the current connection.
func (c *Client) Send(m *controlpb.ClientMessage) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return ErrNotConnected
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	conn.SetWriteDeadline(time.Now().Add(c.cfg.KeepAlive))
	return conn.WriteMsg(b)
}

// once runs one connection to its end; admitted says whether the controller let
// the agent in.
func (c *Client) once(ctx context.Context) (admitted bool, err error) {
	hello, err := proto.Marshal(c.h.Hello())
	if err != nil {
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, 3*c.cfg.KeepAlive)
	conn, reply, err := noiseconn.Dial(dctx, noiseconn.DialConfig{
		URL: c.cfg.URL, ControllerKey: c.cfg.ControllerKey, Machine: c.cfg.Machine, Hello: hello,
	})
	cancel()
	if err != nil {
		var re *noiseconn.RefusedError
		if errors.As(err, &re) {
			var sh controlpb.ServerHello
			if proto.Unmarshal(re.Payload, &sh) == nil && sh.GetError() != "" {
				return false, &RefusedError{Code: sh.GetCode(), Reason: sh.GetError()}
			}
		}
		return false, err
	}
	defer conn.Close()
	var sh controlpb.ServerHello
	if err := proto.Unmarshal(reply, &sh); err != nil {
		return false, fmt.Errorf("controller's hello does not decode: %w", err)
	}
	if sh.GetProtocolVersion() != ProtocolVersion {
		return false, &RefusedError{Code: "version", Reason: fmt.Sprintf("controller speaks protocol version %d, this agent %d", sh.GetProtocolVersion(), ProtocolVersion)}
	}
	if sh.GetRelayId() != "" {
		c.log.Info("connected to controller", "url", c.cfg.URL, "relay", sh.GetRelayId(), "name", sh.GetRelayName())
	} else {
		c.log.Info("connected to controller", "url", c.cfg.URL, "node", sh.GetNodeId(), "name", sh.GetNodeName())
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
	}()
	c.h.Connected(&sh) // may Send already

	// Keep-alives, and closing the connection when ctx ends so the read returns.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(c.cfg.KeepAlive)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				conn.Close()
				return
			case <-t.C:
				c.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_KeepAlive{KeepAlive: &controlpb.KeepAlive{}}})
			}
		}
	}()
	return true, c.follow(conn)
}

// follow reads the map stream until the connection ends.
func (c *Client) follow(conn *noiseconn.Conn) error {
	var (
		m  *netmap.Map
		rc *relaymap.Config
	)
	rh, _ := c.h.(RelayHandler)
	for {
		conn.SetReadDeadline(time.Now().Add(3 * c.cfg.KeepAlive))
		b, err := conn.ReadMsg()
		if err != nil {
			return fmt.Errorf("reading from controller: %w", err)
		}
		var sm controlpb.ServerMessage
		if err := proto.Unmarshal(b, &sm); err != nil {
			return fmt.Errorf("controller message does not decode: %w", err)
		}
		switch msg := sm.Msg.(type) {
		case *controlpb.ServerMessage_FullMap:
			if m, err = netmap.FromProto(msg.FullMap); err != nil {
				return fmt.Errorf("controller sent a bad network map: %w", err)
			}
			c.h.Map(m)
		case *controlpb.ServerMessage_Delta:
			if m == nil {
				return errors.New("controller sent a delta before the network map")
			}
			if m, err = m.Apply(msg.Delta); err != nil {
				return fmt.Errorf("controller sent a bad delta: %w", err)
			}
			c.h.Map(m)
		case *controlpb.ServerMessage_RelayConfig:
			if rh == nil {
				return errors.New("controller sent a relay configuration to an agent")
			}
			if rc, err = relaymap.FromProto(msg.RelayConfig); err != nil {
				return fmt.Errorf("controller sent a bad relay configuration: %w", err)
			}
			rh.Relay(rc)
		case *controlpb.ServerMessage_RelayDelta:
			if rh == nil || rc == nil {
				return errors.New("controller sent a relay delta before a relay configuration")
			}
			if rc, err = rc.Apply(msg.RelayDelta); err != nil {
				return fmt.Errorf("controller sent a bad relay delta: %w", err)
			}
			rh.Relay(rc)
		case *controlpb.ServerMessage_Goodbye:
			return &RefusedError{Code: msg.Goodbye.GetCode(), Reason: msg.Goodbye.GetReason()}
		case *controlpb.ServerMessage_KeepAlive, nil:
		}
	}
}
