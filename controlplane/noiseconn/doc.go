// Package noiseconn is the transport of the agent control channel: a
// Noise_IK_25519_ChaChaPoly_BLAKE2s session (flynn/noise) set up by an HTTP/1.1
// Upgrade on the controller's HTTPS listener, carrying length-prefixed messages. It
// does not know what the messages mean: hello payloads, replies and messages are
// []byte, encoded by the callers. It must never hand a caller a Conn, a reply or a
// refusal that the pinned or authenticated static key did not produce, and never
// reuse a nonce.
//
// # Handshake
//
// The agent (initiator) knows the controller's static key in advance (it is pinned at
// enrollment) and sends
//
//	POST /api/v1/control HTTP/1.1
//	Upgrade: cvlan-control/1
//	Connection: Upgrade
//	Cvlan-Handshake: base64(msg1)
//
// where the header holds standard, padded base64 and msg1's payload is an 8-byte
// big-endian Unix-nanosecond timestamp followed by the caller's hello. The Noise
// prologue is "cvlan-control/1". The controller (responder) answers:
//
//   - 401 {"code":"controller_key"} if msg1 does not decrypt with its static key: the
//     agent was given another controller's key;
//   - 403 {"code":"clock_skew"} if the timestamp is more than MaxSkew (2 minutes) away
//     from its clock, 403 {"code":"replayed"} if it is not later than the last one
//     accepted from the same machine key (a replayed msg1);
//   - otherwise it asks the caller's authorize function, which returns a reply, and
//     puts the reply in msg2's payload. If authorize refuses: 403 with
//     "Cvlan-Handshake: base64(msg2)", so that the agent gets an authenticated
//     refusal. If it accepts: "101 Switching Protocols" with the same header, and the
//     connection carries frames from then on.
//
// The agent refuses any msg2 that does not complete the handshake with the pinned
// key (ErrControllerKey). Because the Noise handshake authenticates the controller,
// the agent does not verify the HTTPS certificate unless given a tls.Config; TLS only
// hides the handshake's metadata and gets through middleboxes.
//
// # Frames and messages
//
// After the handshake each direction is a sequence of frames: a 4-byte big-endian
// length, then that many bytes (16 to 65535) of ChaChaPoly ciphertext under the
// session's implicit nonce counter. The plaintexts of the frames form a byte stream
// holding messages: a 4-byte big-endian length, then that many bytes (at most
// MaxMessage, 4 MiB by default). A message may span many frames. A frame that does
// not decrypt, or any other read error, closes the connection.
package noiseconn

import (
	"errors"
	"time"

	"github.com/flynn/noise"
)

// Protocol constants.
const (
	// Path is the HTTP path of the control channel on the controller.
	Path = "/api/v1/control"
	// Protocol is the HTTP Upgrade token and the Noise prologue.
	Protocol = "cvlan-control/1"
	// HandshakeHeader carries a Noise handshake message in standard, padded base64.
	HandshakeHeader = "Cvlan-Handshake"
)

// Limits and defaults.
const (
	// DefaultMaxMessage is the largest message accepted when no limit is configured.
	DefaultMaxMessage = 4 << 20
	// maxMaxMessage caps a configured MaxMessage: it fits the 32-bit length prefix
	// and a 32-bit int.
	maxMaxMessage = 1 << 30
	// DefaultMaxSkew is how far an agent's handshake timestamp may be from the
	// controller's clock when no limit is configured.
	DefaultMaxSkew = 2 * time.Minute
	// MaxFrame is the largest frame body (Noise transport message) in bytes.
	MaxFrame = noise.MaxMsgLen
	// MinFrame is the smallest frame body: the ChaChaPoly tag of an empty plaintext.
	MinFrame = 16
)

// Errors callers branch on.
var (
	// ErrControllerKey means the controller is not the one whose key the agent
	// pinned: it could not decrypt msg1, or its msg2 does not come from that key.
	ErrControllerKey = errors.New("--controller-key does not match it")
	// ErrFrameTooLarge is a frame length over MaxFrame.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrFrameTooSmall is a frame length under MinFrame.
	ErrFrameTooSmall = errors.New("frame too small")
	// ErrMessageTooLarge is a message longer than the configured maximum.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrDecrypt is a frame that does not decrypt: corrupted or forged.
	ErrDecrypt = errors.New("frame does not decrypt")

	// ErrHandshake is (server side) a msg1 not made for this controller's key.
	ErrHandshake = errors.New("handshake not made for this controller's key")
	// ErrReplayed is (server side) a msg1 whose timestamp is not later than the last
	// one accepted from the same machine key.
	ErrReplayed = errors.New("handshake replayed")
	// ErrClockSkew is (server side) a msg1 whose timestamp is too far from now.
	ErrClockSkew = errors.New("handshake timestamp too far from the controller's clock")
	// ErrNotAuthorized is (server side) a handshake the authorize function refused.
	ErrNotAuthorized = errors.New("machine not authorized")
)

// cipherSuite and the pattern are fixed by the protocol.
var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// handshakeOverhead is the size of msg1 around its payload in Noise_IK_25519 with a
// 16-byte tag: e (32), encrypted s (48), payload tag (16).
const handshakeOverhead = 32 + 48 + 16

// maxHello and maxReply are the largest payloads that keep msg1 and msg2 within one
// Noise message (msg2 is e, 32 bytes, and the payload's tag).
const (
	maxHello = noise.MaxMsgLen - handshakeOverhead - timestampLen
	maxReply = noise.MaxMsgLen - 32 - 16
)

// timestampLen is the size of msg1's timestamp prefix.
const timestampLen = 8
