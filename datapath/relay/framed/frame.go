package framed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cvlan/cvlan/controlplane/key"
)

// FrameType is the first byte of a frame.
type FrameType byte

// Frame types. The mesh types travel only between relays of a region.
const (
	// FrameSendPacket (client → relay): destination node key, then the packet.
	FrameSendPacket FrameType = 0x01
	// FrameRecvPacket (relay → client): source node key, then the packet.
	FrameRecvPacket FrameType = 0x02
	// FrameKeepAlive (either way): no payload.
	FrameKeepAlive FrameType = 0x03
	// FramePeerGone (relay → client): node key, then one reason byte.
	FramePeerGone FrameType = 0x04
	// FrameError (either way): code byte, subject node key (zero if none), then
	// a UTF-8 reason.
	FrameError FrameType = 0x05
	// FrameMeshPresence (relay ↔ relay): tenant, node key, one byte 1 = present,
	// 0 = gone.
	FrameMeshPresence FrameType = 0x10
	// FrameMeshForward (relay ↔ relay): tenant, source node key, destination node
	// key, then the packet.
	FrameMeshForward FrameType = 0x11
)

func (t FrameType) String() string {
	switch t {
	case FrameSendPacket:
		return "send-packet"
	case FrameRecvPacket:
		return "recv-packet"
	case FrameKeepAlive:
		return "keepalive"
	case FramePeerGone:
		return "peer-gone"
	case FrameError:
		return "error"
	case FrameMeshPresence:
		return "mesh-presence"
	case FrameMeshForward:
		return "mesh-forward"
	}
	return fmt.Sprintf("frame-type-%#02x", byte(t))
}

// Sizes of the wire format.
const (
	// HeaderLen is the frame header: type (1) and big-endian payload length (4).
	HeaderLen = 5
	// MaxPacket is the largest WireGuard packet a frame carries.
	MaxPacket = 65535
	// MaxPayload is the largest frame payload: a packet with the largest header
	// any frame type puts before it (mesh-forward: 1+255+32+32) fits.
	MaxPayload = MaxPacket + 1024
	// MaxFrame is the largest frame, header included.
	MaxFrame = HeaderLen + MaxPayload
	// MaxTenantLen is the longest tenant ID the mesh frames carry.
	MaxTenantLen = 255
)

// Reasons of a peer-gone frame.
const (
	// GoneDisconnected: the peer was connected and is not any more.
	GoneDisconnected byte = 0
	// GoneNotHere: the peer is not connected to this relay or its region.
	GoneNotHere byte = 1
)

// Codes of an error frame.
const (
	// CodeNotAllowed: the sender may not reach the subject node key.
	CodeNotAllowed byte = 1
	// CodeMalformed: the relay could not parse a frame; it closes the connection.
	CodeMalformed byte = 2
)

// Errors callers branch on.
var (
	// ErrFrameTooLarge is a frame length over MaxPayload.
	ErrFrameTooLarge = errors.New("frame too large")
	// ErrMalformed is a frame whose payload does not fit its type.
	ErrMalformed = errors.New("malformed frame")
)

// Frame is one decoded frame. Payload aliases the buffer it was read into.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// ReadFrame reads one frame from r, reusing buf when it is large enough. It
// returns io.EOF if r ends before the frame starts, an error wrapping
// io.ErrUnexpectedEOF if it ends inside one, and an error wrapping
// ErrFrameTooLarge, having read only the header and allocated nothing, for a
// length over MaxPayload. It never allocates more than MaxPayload bytes.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, fmt.Errorf("reading frame header: %w", err)
		}
		return Frame{}, err
	}
	t, n := FrameType(hdr[0]), binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%v frame of %d bytes, limit %d: %w", t, n, MaxPayload, ErrFrameTooLarge)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("reading %v frame of %d bytes: %w", t, n, err)
	}
	return Frame{Type: t, Payload: buf}, nil
}

// ParseFrame decodes b as exactly one frame, without copying.
func ParseFrame(b []byte) (Frame, error) {
	if len(b) < HeaderLen {
		return Frame{}, fmt.Errorf("%d-byte frame, shorter than its header: %w", len(b), ErrMalformed)
	}
	t, n := FrameType(b[0]), binary.BigEndian.Uint32(b[1:])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%v frame of %d bytes, limit %d: %w", t, n, MaxPayload, ErrFrameTooLarge)
	}
	if uint64(n) != uint64(len(b)-HeaderLen) {
		return Frame{}, fmt.Errorf("%v frame says %d bytes, carries %d: %w", t, n, len(b)-HeaderLen, ErrMalformed)
	}
	return Frame{Type: t, Payload: b[HeaderLen:]}, nil
}

// AppendFrame appends a frame of type t whose payload is the concatenation of
// parts. It panics if the payload is over MaxPayload: callers check packet sizes.
func AppendFrame(b []byte, t FrameType, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > MaxPayload {
		panic(fmt.Sprintf("framed: %v frame of %d bytes, limit %d", t, n, MaxPayload))
	}
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Packet decodes a send-packet or recv-packet payload: the peer's node key and the
// packet (aliasing the payload).
func (f Frame) Packet() (key.NodePublic, []byte, error) {
	if f.Type != FrameSendPacket && f.Type != FrameRecvPacket {
		return key.NodePublic{}, nil, fmt.Errorf("%v frame is not a packet: %w", f.Type, ErrMalformed)
	}
	if len(f.Payload) < key.Len {
		return key.NodePublic{}, nil, fmt.Errorf("%d-byte %v frame: %w", len(f.Payload), f.Type, ErrMalformed)
	}
	if len(f.Payload)-key.Len > MaxPacket {
		return key.NodePublic{}, nil, fmt.Errorf("%v frame with a %d-byte packet: %w", f.Type, len(f.Payload)-key.Len, ErrMalformed)
	}
	return key.NodePublicFromRaw([key.Len]byte(f.Payload)), f.Payload[key.Len:], nil
}

// PeerGone decodes a peer-gone payload.
func (f Frame) PeerGone() (key.NodePublic, byte, error) {
	if f.Type != FramePeerGone || len(f.Payload) != key.Len+1 {
		return key.NodePublic{}, 0, fmt.Errorf("%d-byte %v frame as peer-gone: %w", len(f.Payload), f.Type, ErrMalformed)
	}
	return key.NodePublicFromRaw([key.Len]byte(f.Payload)), f.Payload[key.Len], nil
}

// Error decodes an error payload.
func (f Frame) Error() (code byte, subject key.NodePublic, reason string, err error) {
	if f.Type != FrameError || len(f.Payload) < 1+key.Len {
		return 0, key.NodePublic{}, "", fmt.Errorf("%d-byte %v frame as error: %w", len(f.Payload), f.Type, ErrMalformed)
	}
	return f.Payload[0], key.NodePublicFromRaw([key.Len]byte(f.Payload[1:])), string(f.Payload[1+key.Len:]), nil
}

// cutTenant splits a length-prefixed tenant ID off a mesh payload.
func cutTenant(p []byte) (string, []byte, bool) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return "", nil, false
	}
	return string(p[1 : 1+int(p[0])]), p[1+int(p[0]):], true
}

// MeshPresence decodes a mesh-presence payload.
func (f Frame) MeshPresence() (tenant string, node key.NodePublic, present bool, err error) {
	tenant, rest, ok := cutTenant(f.Payload)
	if f.Type != FrameMeshPresence || !ok || len(rest) != key.Len+1 || rest[key.Len] > 1 {
		return "", key.NodePublic{}, false, fmt.Errorf("%d-byte %v frame as mesh-presence: %w", len(f.Payload), f.Type, ErrMalformed)
	}
	return tenant, key.NodePublicFromRaw([key.Len]byte(rest)), rest[key.Len] == 1, nil
}

// MeshForward decodes a mesh-forward payload; pkt aliases the payload.
func (f Frame) MeshForward() (tenant string, src, dst key.NodePublic, pkt []byte, err error) {
	tenant, rest, ok := cutTenant(f.Payload)
	if f.Type != FrameMeshForward || !ok || len(rest) < 2*key.Len || len(rest)-2*key.Len > MaxPacket {
		return "", key.NodePublic{}, key.NodePublic{}, nil,
			fmt.Errorf("%d-byte %v frame as mesh-forward: %w", len(f.Payload), f.Type, ErrMalformed)
	}
	return tenant, key.NodePublicFromRaw([key.Len]byte(rest)), key.NodePublicFromRaw([key.Len]byte(rest[key.Len:])),
		rest[2*key.Len:], nil
}

// Encoders of each frame type.

func appendKey(b []byte, k key.NodePublic) []byte {
	r := k.Raw()
	return append(b, r[:]...)
}

// SendPacketFrame is a send-packet frame.
func SendPacketFrame(dst key.NodePublic, pkt []byte) []byte {
	r := dst.Raw()
	return AppendFrame(make([]byte, 0, HeaderLen+key.Len+len(pkt)), FrameSendPacket, r[:], pkt)
}

// RecvPacketFrame is a recv-packet frame.
func RecvPacketFrame(src key.NodePublic, pkt []byte) []byte {
	r := src.Raw()
	return AppendFrame(make([]byte, 0, HeaderLen+key.Len+len(pkt)), FrameRecvPacket, r[:], pkt)
}

// KeepAliveFrame is a keepalive frame.
func KeepAliveFrame() []byte { return []byte{byte(FrameKeepAlive), 0, 0, 0, 0} }

// PeerGoneFrame is a peer-gone frame.
func PeerGoneFrame(node key.NodePublic, reason byte) []byte {
	r := node.Raw()
	return AppendFrame(nil, FramePeerGone, r[:], []byte{reason})
}

// ErrorFrame is an error frame; reason is cut to 512 bytes.
func ErrorFrame(code byte, subject key.NodePublic, reason string) []byte {
	r := subject.Raw()
	return AppendFrame(nil, FrameError, []byte{code}, r[:], []byte(reason[:min(len(reason), 512)]))
}

// MeshPresenceFrame is a mesh-presence frame; tenant is at most MaxTenantLen bytes.
func MeshPresenceFrame(tenant string, node key.NodePublic, present bool) []byte {
	p := byte(0)
	if present {
		p = 1
	}
	b := append([]byte{byte(len(tenant))}, tenant...)
	b = appendKey(b, node)
	return AppendFrame(nil, FrameMeshPresence, b, []byte{p})
}

// MeshForwardFrame is a mesh-forward frame; tenant is at most MaxTenantLen bytes.
func MeshForwardFrame(tenant string, src, dst key.NodePublic, pkt []byte) []byte {
	hdr := make([]byte, 0, 1+len(tenant)+2*key.Len)
	hdr = append(hdr, byte(len(tenant)))
	hdr = append(hdr, tenant...)
	hdr = appendKey(hdr, src)
	hdr = appendKey(hdr, dst)
	return AppendFrame(make([]byte, 0, HeaderLen+len(hdr)+len(pkt)), FrameMeshForward, hdr, pkt)
}
