package framed

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/cvlan/cvlan/controlplane/noiseconn"
)

// Transport names, the "transport" label of the metrics.
const (
	TransportTCP = "tcp"
	TransportWS  = "ws"
)

// wsReadLimit bounds one WebSocket message. The relay writes at most one relay
// frame (MaxFrame, as Noise frames) per message; a client's bridge, at most what
// one read of its loopback connection gave (32 KiB).
const wsReadLimit = 2 * MaxFrame

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	return headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// acceptWS accepts a WebSocket and runs noiseconn's server handshake inside it: the
// client sends the same HTTP Upgrade request it sends over TCP, as the first bytes
// of the WebSocket stream.
func acceptWS(w http.ResponseWriter, r *http.Request, ns *noiseconn.Server, authorize noiseconn.Authorize, timeout time.Duration) (*noiseconn.Conn, error) {
	hj := &wsHijacker{ResponseWriter: w}
	c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return nil, fmt.Errorf("accepting WebSocket from %s: %w", r.RemoteAddr, err)
	}
	nc := newWSConn(c, hj)
	nc.SetDeadline(time.Now().Add(timeout))
	br := bufio.NewReader(nc)
	inner, err := http.ReadRequest(br)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading the handshake request inside the WebSocket from %s: %w", r.RemoteAddr, err)
	}
	inner.RemoteAddr = r.RemoteAddr
	hw := &hijackWriter{nc: nc, br: br, h: http.Header{}}
	conn, err := ns.Upgrade(hw, inner, authorize)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("over WebSocket: %w", err)
	}
	nc.SetDeadline(time.Time{})
	return conn, nil
}

// hijackWriter is the http.ResponseWriter of a request read from a WebSocket
// stream: noiseconn.Server.Upgrade writes its refusals through it, or hijacks it.
type hijackWriter struct {
	nc    net.Conn
	br    *bufio.Reader
	h     http.Header
	wrote bool
}

func (w *hijackWriter) Header() http.Header { return w.h }

func (w *hijackWriter) WriteHeader(status int) {
	if w.wrote {
		return
	}
	w.wrote = true
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	w.h.Write(&b)
	b.WriteString("\r\n")
	io.WriteString(w.nc, b.String())
}

func (w *hijackWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.nc.Write(p)
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.wrote {
		return nil, nil, errors.New("response already written")
	}
	return w.nc, bufio.NewReadWriter(w.br, bufio.NewWriter(w.nc)), nil
}

// dialNoise connects to the relay and runs noiseconn's client handshake: directly
// over TCP (TLS) for http(s) URLs, inside a WebSocket for ws(s) URLs.
func dialNoise(ctx context.Context, cfg DialConfig, hello []byte) (*noiseconn.Conn, string, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, "", fmt.Errorf("relay URL: %w", err)
	}
	mk := cfg.Machine.Raw()
	pub := cfg.Machine.MachinePublic().Raw()
	ncfg := noiseconn.DialConfig{
		URL:           cfg.URL,
		ControllerKey: machineKeyOf(cfg.RelayKey),
		Hello:         hello,
		TLSConfig:     cfg.TLSConfig,
		MaxMessage:    MaxFrame,
	}
	ncfg.Machine.Private, ncfg.Machine.Public = mk[:], pub[:]
	switch u.Scheme {
	case "https", "http":
		c, _, err := noiseconn.Dial(ctx, ncfg)
		if err != nil {
			return nil, "", fmt.Errorf("dialing relay %s: %w", cfg.URL, refused(err))
		}
		return c, TransportTCP, nil
	case "wss", "ws":
		c, err := dialWS(ctx, u, ncfg)
		if err != nil {
			return nil, "", fmt.Errorf("dialing relay %s: %w", cfg.URL, refused(err))
		}
		return c, TransportWS, nil
	}
	return nil, "", fmt.Errorf("relay URL %q: want https, http, wss or ws", cfg.URL)
}

// refused turns noiseconn's refusal into a *RefusedError with the relay's
// reason, and returns other errors as they are.
func refused(err error) error {
	var r *noiseconn.RefusedError
	if !errors.As(err, &r) {
		return err
	}
	reason := strings.ToValidUTF8(string(r.Payload[:min(len(r.Payload), MaxRefusalLen)]), "")
	return &RefusedError{Reason: reason, Err: r}
}

// dialWS opens a WebSocket to u+noiseconn.Path and runs noiseconn.Dial through it.
// noiseconn.Dial dials TCP itself and takes no net.Conn, so the WebSocket is
// bridged to a loopback listener that accepts exactly one connection. Whoever
// connects to that listener first gets the relay: if it is not our Dial, our Dial
// fails, and the intruder's handshake is its own (the relay authenticates its
// machine key, not ours), so it gains nothing it could not get by dialing the relay.
func dialWS(ctx context.Context, u *url.URL, ncfg noiseconn.DialConfig) (*noiseconn.Conn, error) {
	wu := *u
	wu.Path = strings.TrimSuffix(wu.Path, "/") + noiseconn.Path
	tc := &tls.Config{InsecureSkipVerify: true}
	if ncfg.TLSConfig != nil {
		tc = ncfg.TLSConfig.Clone()
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false}}
	wc, _, err := websocket.Dial(ctx, wu.String(), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("opening WebSocket: %w", err)
	}
	wsnc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	wc.SetReadLimit(wsReadLimit) // after NetConn, which lifts the limit

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		wsnc.Close()
		return nil, fmt.Errorf("bridging the WebSocket: %w", err)
	}
	accepted := make(chan error, 1)
	go func() {
		lc, err := ln.Accept()
		ln.Close()
		if err != nil {
			wsnc.Close()
			accepted <- err
			return
		}
		accepted <- nil
		bridge(lc, wsnc)
	}()
	ncfg.URL = "http://" + ln.Addr().String()
	ncfg.TLSConfig = nil
	c, _, err := noiseconn.Dial(ctx, ncfg)
	if err != nil {
		ln.Close()
		if aerr := <-accepted; aerr != nil {
			wsnc.Close()
		}
		return nil, err
	}
	return c, nil
}

// bridge copies between a and b until either ends, then closes both.
func bridge(a, b net.Conn) {
	var once sync.Once
	done := func() { once.Do(func() { a.Close(); b.Close() }) }
	go func() { io.Copy(a, b); done() }()
	io.Copy(b, a)
	done()
}
