package session

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/blake2s"
)

// The bind packet format; see the package documentation.
const (
	// Magic starts every bind and ack packet. bpf/relay.c has the same bytes.
	Magic = "cvRB"
	// Version is the only bind packet version this package speaks.
	Version = 1
	// Size is the length of a bind or ack packet.
	Size = 56
	// macOffset is where the MAC starts; it covers every byte before it.
	macOffset = 24
)

// Type is a bind packet's type.
type Type uint8

// Bind packet types.
const (
	TypeBind Type = 1 // peer to relay
	TypeAck  Type = 2 // relay to peer
)

// FlagPeerBound, in an ack, says the other side of the session is bound too.
const FlagPeerBound uint8 = 1 << 0

// Message is a bind or ack packet without its MAC.
type Message struct {
	Type    Type
	Side    Side
	Flags   uint8
	Session ID
	Counter uint64
}

// Errors of [Parse], [Session.Bind] and [Table.Bind]. [Reason] maps them to a
// [DropReason].
var (
	ErrTruncated      = errors.New("bind packet: wrong length")
	ErrMagic          = errors.New("bind packet: wrong magic")
	ErrVersion        = errors.New("bind packet: unsupported version")
	ErrType           = errors.New("bind packet: unexpected type")
	ErrSide           = errors.New("bind packet: invalid side")
	ErrBadMAC         = errors.New("bind packet: bad MAC")
	ErrReplay         = errors.New("bind packet: counter not newer than the last accepted")
	ErrUnknownSession = errors.New("bind packet: unknown session")
	ErrWrongSide      = errors.New("bind packet: side does not own the port it arrived on")
)

// IsBind reports whether a UDP payload is a bind or ack packet (starts with Magic)
// rather than relayed data. It does not validate anything else.
func IsBind(payload []byte) bool {
	return len(payload) >= len(Magic) && string(payload[:len(Magic)]) == Magic
}

// Append appends m, with a MAC keyed by token, to b.
func (m Message) Append(b []byte, token *Token) []byte {
	start := len(b)
	b = append(b, Magic...)
	b = append(b, Version, byte(m.Type), byte(m.Side), m.Flags)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Session))
	b = binary.BigEndian.AppendUint64(b, m.Counter)
	mac := computeMAC(b[start:], token)
	return append(b, mac[:]...)
}

// Parse decodes a bind or ack packet. It does not check the MAC: call [Verify] with
// the token of the side the message names.
func Parse(b []byte) (Message, error) {
	if len(b) != Size {
		return Message{}, fmt.Errorf("%w: %d bytes, want %d", ErrTruncated, len(b), Size)
	}
	if !bytes.Equal(b[:4], []byte(Magic)) {
		return Message{}, ErrMagic
	}
	if b[4] != Version {
		return Message{}, fmt.Errorf("%w: %d", ErrVersion, b[4])
	}
	m := Message{
		Type:    Type(b[5]),
		Side:    Side(b[6]),
		Flags:   b[7],
		Session: ID(binary.BigEndian.Uint64(b[8:])),
		Counter: binary.BigEndian.Uint64(b[16:]),
	}
	if m.Type != TypeBind && m.Type != TypeAck {
		return Message{}, fmt.Errorf("%w: %d", ErrType, m.Type)
	}
	if !m.Side.Valid() {
		return Message{}, fmt.Errorf("%w: %d", ErrSide, m.Side)
	}
	return m, nil
}

// Verify reports whether the Size-byte packet b carries a valid MAC under token. It
// compares in constant time.
func Verify(b []byte, token *Token) bool {
	if len(b) != Size {
		return false
	}
	mac := computeMAC(b[:macOffset], token)
	return subtle.ConstantTimeCompare(mac[:], b[macOffset:]) == 1
}

func computeMAC(msg []byte, token *Token) [blake2s.Size]byte {
	h, err := blake2s.New256(token[:])
	if err != nil {
		// Only a key longer than 32 bytes fails, and a Token is 32 bytes.
		panic(fmt.Sprintf("session: blake2s with a %d-byte key: %v", len(token), err))
	}
	h.Write(msg)
	var out [blake2s.Size]byte
	h.Sum(out[:0])
	return out
}
