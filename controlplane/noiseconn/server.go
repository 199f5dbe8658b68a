package noiseconn

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Error codes of the JSON bodies the server answers with.
const (
	CodeControllerKey   = "controller_key"
	CodeReplayed        = "replayed"
	CodeClockSkew       = "clock_skew"
	CodeRefused         = "refused"
	CodeBadRequest      = "bad_request"
	CodeMethod          = "method_not_allowed"
	CodeUpgradeRequired = "upgrade_required"
	CodeInternal        = "internal"
)

// upgradeWriteTimeout bounds writing the 101 response on a hijacked connection.
const upgradeWriteTimeout = 10 * time.Second

// Server is the controller's side of the handshake. Set the fields before the first
// Upgrade and do not copy a Server after it; Upgrade is safe for concurrent use.
type Server struct {
	// Key is the controller's static key pair (controller.NoiseKey.DHKey()).
	Key noise.DHKey
	// Now is the clock the handshake timestamps are checked against; nil is time.Now.
	Now func() time.Time
	// MaxSkew is how far a timestamp may be from Now; 0 is DefaultMaxSkew.
	MaxSkew time.Duration
	// MaxMessage is the largest message accepted on the Conn; 0 is
	// DefaultMaxMessage, and more than 1 GiB is 1 GiB.
	MaxMessage int

	mu        sync.Mutex
	last      map[key.MachinePublic]int64 // last accepted timestamp by machine key
	lastPrune time.Time
}

// Authorize decides, from the authenticated machine key and its hello, whether the
// machine may connect. The reply travels encrypted in msg2 either way: with ok it
// opens the channel, without it the agent gets it in a RefusedError.
type Authorize func(peer key.MachinePublic, hello []byte) (reply []byte, ok bool)

// Upgrade runs the controller's side of the handshake on a request to Path. On
// success the caller owns the returned Conn, whose connection the HTTP server has
// let go of. Otherwise Upgrade has written the HTTP response and returns an error
// (wrapping ErrHandshake, ErrClockSkew, ErrReplayed or ErrNotAuthorized when that is
// the reason). authorize is called only for a msg1 that decrypted with s.Key and
// passed the replay checks.
func (s *Server) Upgrade(w http.ResponseWriter, r *http.Request, authorize Authorize) (*Conn, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, CodeMethod, "the control channel takes POST with an Upgrade to "+Protocol)
		return nil, fmt.Errorf("control handshake: method %s", r.Method)
	}
	if r.ProtoMajor != 1 || !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", Protocol) {
		w.Header().Set("Upgrade", Protocol)
		w.Header().Set("Connection", "Upgrade")
		writeError(w, http.StatusUpgradeRequired, CodeUpgradeRequired, "the control channel needs HTTP/1.1 with Upgrade: "+Protocol)
		return nil, fmt.Errorf("control handshake: %s request without Upgrade: %s", r.Proto, Protocol)
	}
	if len(s.Key.Private) != key.Len || len(s.Key.Public) != key.Len {
		writeError(w, http.StatusInternalServerError, CodeInternal, "the controller has no Noise key")
		return nil, errors.New("control handshake: the server's Noise key is not set")
	}
	enc := r.Header.Get(HandshakeHeader)
	if enc == "" || len(enc) > base64.StdEncoding.EncodedLen(noise.MaxMsgLen) {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "missing or oversized "+HandshakeHeader+" header")
		return nil, fmt.Errorf("control handshake from %s: %d-byte %s header", r.RemoteAddr, len(enc), HandshakeHeader)
	}
	msg1, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, HandshakeHeader+" is not standard base64")
		return nil, fmt.Errorf("control handshake from %s: decoding %s: %w", r.RemoteAddr, HandshakeHeader, err)
	}

	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Prologue:      []byte(Protocol),
		StaticKeypair: s.Key,
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return nil, fmt.Errorf("control handshake: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, msg1)
	if err != nil {
		writeError(w, http.StatusUnauthorized, CodeControllerKey,
			"the handshake was not made for this controller's key: the agent's --controller-key is another controller's")
		return nil, fmt.Errorf("control handshake from %s: %w (%v)", r.RemoteAddr, ErrHandshake, err)
	}
	peer := key.MachinePublicFromRaw([key.Len]byte(hs.PeerStatic()))
	if len(payload) < timestampLen {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "the handshake payload has no timestamp")
		return nil, fmt.Errorf("control handshake from %s (%s): %d-byte payload", r.RemoteAddr, peer, len(payload))
	}
	ts := int64(binary.BigEndian.Uint64(payload))
	if err := s.checkFresh(peer, ts); err != nil {
		code := CodeReplayed
		if errors.Is(err, ErrClockSkew) {
			code = CodeClockSkew
		}
		writeError(w, http.StatusForbidden, code, err.Error())
		return nil, fmt.Errorf("control handshake from %s (%s): %w", r.RemoteAddr, peer, err)
	}

	reply, ok := authorize(peer, payload[timestampLen:])
	if len(reply) > maxReply {
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return nil, fmt.Errorf("control handshake from %s (%s): %d-byte reply, limit %d", r.RemoteAddr, peer, len(reply), maxReply)
	}
	msg2, recv, send, err := hs.WriteMessage(nil, reply)
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "internal error")
		return nil, fmt.Errorf("control handshake from %s (%s): writing msg2 with a %d-byte reply: %w",
			r.RemoteAddr, peer, len(reply), err)
	}
	enc2 := base64.StdEncoding.EncodeToString(msg2)
	if !ok {
		w.Header().Set(HandshakeHeader, enc2)
		writeError(w, http.StatusForbidden, CodeRefused, "the controller refused this machine; the reason is in the handshake")
		return nil, fmt.Errorf("control handshake from %s (%s): %w", r.RemoteAddr, peer, ErrNotAuthorized)
	}

	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, http.StatusInternalServerError, CodeInternal, "cannot take over the connection")
		return nil, fmt.Errorf("control handshake from %s (%s): hijacking: %w", r.RemoteAddr, peer, err)
	}
	// Bytes the HTTP server read ahead belong to the frames; read them first, then
	// the connection itself (the server's reader must not be used after Hijack).
	ahead := readAhead(brw.Reader)
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + Protocol + "\r\nConnection: Upgrade\r\n" +
		HandshakeHeader + ": " + enc2 + "\r\n\r\n"
	nc.SetWriteDeadline(s.now().Add(upgradeWriteTimeout))
	if _, err := io.WriteString(nc, resp); err != nil {
		nc.Close()
		return nil, fmt.Errorf("control handshake from %s (%s): writing 101: %w", r.RemoteAddr, peer, err)
	}
	nc.SetWriteDeadline(time.Time{})
	return newConn(nc, ahead, send, recv, peer, s.MaxMessage), nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// checkFresh accepts a handshake timestamp if it is within MaxSkew of now and later
// than the last one accepted from peer, and records it.
func (s *Server) checkFresh(peer key.MachinePublic, ts int64) error {
	skew := s.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	now := s.now()
	if d := time.Unix(0, ts).Sub(now); d > skew || d < -skew {
		return fmt.Errorf("%w: it is %v off, limit %v", ErrClockSkew, d.Round(time.Millisecond), skew)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[key.MachinePublic]int64{}
	}
	// Entries older than the window can go: a timestamp they would reject now fails
	// the skew check anyway.
	if now.Sub(s.lastPrune) >= skew {
		oldest := now.Add(-skew).UnixNano()
		for k, t := range s.last {
			if t < oldest {
				delete(s.last, k)
			}
		}
		s.lastPrune = now
	}
	if last, ok := s.last[peer]; ok && ts <= last {
		return fmt.Errorf("%w: timestamp %d not after the last accepted %d", ErrReplayed, ts, last)
	}
	s.last[peer] = ts
	return nil
}

// headerHasToken reports whether a comma-separated header holds token, ignoring case.
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

// writeError writes the JSON error body of the control endpoint.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}{msg, code})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)+1))
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
