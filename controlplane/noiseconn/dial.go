package noiseconn

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

// GenerateKey returns a new Curve25519 static key pair for Noise.
func GenerateKey() (noise.DHKey, error) {
	k, err := noise.DH25519.GenerateKeypair(rand.Reader)
	if err != nil {
		return noise.DHKey{}, fmt.Errorf("generating Noise key: %w", err)
	}
	return k, nil
}

// DialConfig says where and as whom an agent connects.
type DialConfig struct {
	// URL is the controller's base URL, "https://host[:port]"; Path is appended to
	// its path. "http://" is accepted too, for a controller behind a proxy that ends
	// TLS, and for tests.
	URL string
	// ControllerKey is the controller's pinned static key. Required.
	ControllerKey key.MachinePublic
	// Machine is this machine's static key pair. Required.
	Machine noise.DHKey
	// Hello is the payload of msg1, encrypted to ControllerKey.
	Hello []byte
	// TLSConfig, if set, is used to verify the controller's certificate. If nil, the
	// certificate is not verified: the Noise handshake authenticates the controller.
	// Its NextProtos is replaced with HTTP/1.1, which Upgrade needs.
	TLSConfig *tls.Config
	// Now is the clock for msg1's timestamp; nil is time.Now, made strictly
	// increasing within the process so that quick reconnects are not replays.
	Now func() time.Time
	// MaxMessage is the largest message accepted on the Conn; 0 is
	// DefaultMaxMessage, and more than 1 GiB is 1 GiB.
	MaxMessage int
}

// RefusedError is a controller's authenticated refusal: an HTTP status other than
// 101 with a msg2 that completed the handshake with the pinned key. Payload is the
// reply the controller's authorize function gave; callers decode it for the reason.
type RefusedError struct {
	Status  int
	Payload []byte
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the controller refused this machine (HTTP %d)", e.Status)
}

// Dial connects to the controller at cfg.URL and runs the agent's side of the
// handshake. It returns the Conn and the controller's reply. ctx bounds the dial and
// the handshake, not the Conn; give it a deadline. The errors callers branch on wrap
// ErrControllerKey, or are a *RefusedError.
func Dial(ctx context.Context, cfg DialConfig) (*Conn, []byte, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("controller URL: %w", err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, nil, fmt.Errorf("controller URL %q: want https://host[:port]", cfg.URL)
	}
	switch {
	case cfg.ControllerKey.IsZero():
		return nil, nil, errors.New("dialing the controller: no controller key to pin")
	case len(cfg.Machine.Private) != key.Len || len(cfg.Machine.Public) != key.Len:
		return nil, nil, errors.New("dialing the controller: the machine key is not a Curve25519 key pair")
	case len(cfg.Hello) > maxHello:
		return nil, nil, fmt.Errorf("dialing the controller: %d-byte hello, limit %d", len(cfg.Hello), maxHello)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "443"
		if u.Scheme == "http" {
			port = "80"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	var nc net.Conn
	if u.Scheme == "https" {
		tc := &tls.Config{InsecureSkipVerify: true}
		if cfg.TLSConfig != nil {
			tc = cfg.TLSConfig.Clone()
		}
		tc.NextProtos = []string{"http/1.1"}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		nc, err = (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", addr)
	} else {
		nc, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dialing the controller at %s: %w", cfg.URL, err)
	}
	c, reply, err := handshake(ctx, nc, u, cfg)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return c, reply, nil
}

// handshake runs the agent's side of the handshake on nc.
func handshake(ctx context.Context, nc net.Conn, u *url.URL, cfg DialConfig) (*Conn, []byte, error) {
	// Ending ctx (deadline included) unblocks the I/O below by setting a deadline in
	// the past; the error then says it was ctx.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*Conn, []byte, error) {
		if stop(); ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		return nil, nil, fmt.Errorf("control handshake with %s: %w", cfg.URL, err)
	}

	pinned := cfg.ControllerKey.Raw()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      []byte(Protocol),
		StaticKeypair: cfg.Machine,
		PeerStatic:    pinned[:],
	})
	if err != nil {
		return fail(err)
	}
	payload := binary.BigEndian.AppendUint64(make([]byte, 0, timestampLen+len(cfg.Hello)), uint64(timestamp(cfg.Now)))
	msg1, _, _, err := hs.WriteMessage(nil, append(payload, cfg.Hello...))
	if err != nil {
		return fail(fmt.Errorf("writing msg1: %w", err))
	}

	target := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/") + Path}
	req, err := http.NewRequest(http.MethodPost, target.String(), nil)
	if err != nil {
		return fail(err)
	}
	req.Header.Set("User-Agent", "cvlan-noiseconn")
	req.Header.Set("Upgrade", Protocol)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set(HandshakeHeader, base64.StdEncoding.EncodeToString(msg1))
	if err := req.Write(nc); err != nil {
		return fail(fmt.Errorf("sending the upgrade request: %w", err))
	}
	// br is kept for the frames: the controller may send some right after the 101.
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(fmt.Errorf("reading the upgrade response: %w", err))
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		if err != nil {
			return fail(fmt.Errorf("reading the HTTP %d response: %w", resp.StatusCode, err))
		}
	}

	enc := resp.Header.Get(HandshakeHeader)
	if enc == "" {
		code, msg := errorBody(body)
		switch {
		case resp.StatusCode == http.StatusUnauthorized && code == CodeControllerKey:
			stop()
			return nil, nil, fmt.Errorf("the controller at %s could not decrypt the handshake: %w", cfg.URL, ErrControllerKey)
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return fail(errors.New("HTTP 101 without a handshake"))
		case code != "" && msg != "":
			return fail(fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, code, msg))
		}
		return fail(fmt.Errorf("HTTP %d: %s", resp.StatusCode, trim(body)))
	}
	msg2, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return fail(fmt.Errorf("the reply is not from %s (undecodable %s): %w", cfg.ControllerKey, HandshakeHeader, ErrControllerKey))
	}
	reply, send, recv, err := hs.ReadMessage(nil, msg2)
	if err != nil {
		return fail(fmt.Errorf("the reply is not from %s (%v): %w", cfg.ControllerKey, err, ErrControllerKey))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		stop()
		return nil, nil, &RefusedError{Status: resp.StatusCode, Payload: reply}
	}
	if !stop() {
		return fail(errors.New("cancelled"))
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	return newConn(nc, readAhead(br), send, recv, cfg.ControllerKey, cfg.MaxMessage), reply, nil
}

// lastTimestamp is the last timestamp the real clock gave a handshake.
var lastTimestamp atomic.Int64

// timestamp returns msg1's timestamp: now's, or a strictly increasing one from the
// real clock.
func timestamp(now func() time.Time) int64 {
	if now != nil {
		return now().UnixNano()
	}
	t := time.Now().UnixNano()
	for {
		last := lastTimestamp.Load()
		t = max(t, last+1)
		if lastTimestamp.CompareAndSwap(last, t) {
			return t
		}
	}
}

// errorBody returns the code and message of a JSON error body, or "".
func errorBody(body []byte) (code, msg string) {
	var e struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	json.Unmarshal(body, &e)
	return e.Code, e.Error
}

// trim shortens a response body for an error message.
func trim(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
