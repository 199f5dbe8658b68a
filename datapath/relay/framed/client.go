package framed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
)

// DialConfig says where and as whom a client connects.
type DialConfig struct {
	// URL is the relay's base URL; noiseconn.Path is appended to its path.
	// https:// (or http://) is the HTTP Upgrade over TCP, wss:// (or ws://) the
	// WebSocket.
	URL string
	// RelayKey is the relay's pinned key. Required.
	RelayKey key.RelayPublic
	// Machine is this machine's Noise key. Required.
	Machine key.Private
	// TLSConfig, if set, verifies the relay's certificate; if nil it is not
	// verified, as the Noise handshake authenticates the relay.
	TLSConfig *tls.Config
	// KeepAlive is how often the client sends a keepalive frame; 0 is
	// DefaultKeepAlive, negative disables them.
	KeepAlive time.Duration
	// ReadTimeout makes Recv fail when the relay sent nothing for that long; 0 is
	// 2.5 × DefaultKeepAlive, negative disables it.
	ReadTimeout time.Duration
}

// Client is a node's connection to a relay. One goroutine may call Recv while any
// number call Send. Errors other than the notices below are final; reconnecting is
// the caller's business.
type Client struct {
	conn        *noiseconn.Conn
	transport   string
	readTimeout time.Duration
	done        chan struct{}
	closeOnce   sync.Once
	wmu         sync.Mutex
	wbuf        []byte
}

// PeerGoneError is a notice from the relay, returned by Recv: the peer that the
// client sent to is gone (Reason GoneDisconnected) or not connected (GoneNotHere).
// The Client stays usable.
type PeerGoneError struct {
	Peer   key.NodePublic
	Reason byte
}

func (e *PeerGoneError) Error() string {
	if e.Reason == GoneNotHere {
		return fmt.Sprintf("peer %s is not connected to the relay", e.Peer)
	}
	return fmt.Sprintf("peer %s disconnected from the relay", e.Peer)
}

// RelayError is an error frame from the relay, returned by Recv. With
// CodeNotAllowed the Client stays usable; with CodeMalformed the relay closes it.
type RelayError struct {
	Code    byte
	Subject key.NodePublic
	Reason  string
}

func (e *RelayError) Error() string {
	return fmt.Sprintf("relay error %d about %s: %s", e.Code, e.Subject, e.Reason)
}

// RefusedError is the relay's refusal of this machine, authenticated by the
// relay's pinned key: Reason is what its Authorizer said. It wraps the
// *noiseconn.RefusedError of the handshake.
type RefusedError struct {
	Reason string
	Err    *noiseconn.RefusedError
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the relay refused this machine: %q", e.Reason)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// Dial connects to the relay at cfg.URL and authenticates with cfg.Machine. ctx
// bounds the dial and the handshake only.
func Dial(ctx context.Context, cfg DialConfig) (*Client, error) {
	if cfg.RelayKey.IsZero() {
		return nil, errors.New("dialing relay: no relay key to pin")
	}
	if cfg.Machine.IsZero() {
		return nil, errors.New("dialing relay: no machine key")
	}
	conn, transport, err := dialNoise(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: conn, transport: transport, done: make(chan struct{})}
	c.readTimeout = cfg.ReadTimeout
	if c.readTimeout == 0 {
		c.readTimeout = DefaultKeepAlive * 5 / 2
	}
	ka := cfg.KeepAlive
	if ka == 0 {
		ka = DefaultKeepAlive
	}
	if ka > 0 {
		go c.keepAlive(ka)
	}
	return c, nil
}

// Transport is TransportTCP or TransportWS.
func (c *Client) Transport() string { return c.transport }

func (c *Client) keepAlive(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if err := c.write(KeepAliveFrame()); err != nil {
				return
			}
		}
	}
}

func (c *Client) write(f []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
	return c.conn.WriteMsg(f)
}

// Send sends pkt to the node dst through the relay. The relay drops what dst may
// not receive or what it cannot deliver, and says so to Recv.
func (c *Client) Send(dst key.NodePublic, pkt []byte) error {
	if len(pkt) > MaxPacket {
		return fmt.Errorf("sending a %d-byte packet, limit %d: %w", len(pkt), MaxPacket, ErrFrameTooLarge)
	}
	r := dst.Raw()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendFrame(c.wbuf[:0], FrameSendPacket, r[:], pkt)
	if err := c.write(c.wbuf); err != nil {
		return fmt.Errorf("sending to %s through the relay: %w", dst, err)
	}
	return nil
}

// Recv returns the next packet and its source. A *PeerGoneError or a *RelayError
// with CodeNotAllowed is a notice and leaves the Client usable; any other error is
// final.
func (c *Client) Recv() (src key.NodePublic, pkt []byte, err error) {
	for {
		if c.readTimeout > 0 {
			c.conn.SetReadDeadline(time.Now().Add(c.readTimeout))
		}
		msg, err := c.conn.ReadMsg()
		if err != nil {
			return key.NodePublic{}, nil, fmt.Errorf("receiving from the relay: %w", err)
		}
		f, err := ParseFrame(msg)
		if err != nil {
			c.Close()
			return key.NodePublic{}, nil, fmt.Errorf("receiving from the relay: %w", err)
		}
		switch f.Type {
		case FrameKeepAlive:
			continue
		case FrameRecvPacket:
			src, pkt, err := f.Packet()
			if err != nil {
				c.Close()
				return key.NodePublic{}, nil, fmt.Errorf("receiving from the relay: %w", err)
			}
			return src, pkt, nil
		case FramePeerGone:
			peer, reason, err := f.PeerGone()
			if err != nil {
				c.Close()
				return key.NodePublic{}, nil, fmt.Errorf("receiving from the relay: %w", err)
			}
			return key.NodePublic{}, nil, &PeerGoneError{Peer: peer, Reason: reason}
		case FrameError:
			code, subject, reason, err := f.Error()
			if err != nil {
				c.Close()
				return key.NodePublic{}, nil, fmt.Errorf("receiving from the relay: %w", err)
			}
			return key.NodePublic{}, nil, &RelayError{Code: code, Subject: subject, Reason: reason}
		}
		c.Close()
		return key.NodePublic{}, nil, fmt.Errorf("receiving from the relay: unexpected %v frame: %w", f.Type, ErrMalformed)
	}
}

// Close closes the connection; Send and Recv fail from then on.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	return c.conn.Close()
}
