package framed

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/cvlan/cvlan/controlplane/key"
)

func TestFrameRoundTrip(t *testing.T) {
	k1, k2 := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	pkt := []byte("wireguard packet")
	for _, b := range [][]byte{
		SendPacketFrame(k1, pkt), RecvPacketFrame(k2, pkt), KeepAliveFrame(),
		PeerGoneFrame(k1, GoneNotHere), ErrorFrame(CodeNotAllowed, k2, "no"),
		MeshPresenceFrame("tenant", k1, true), MeshForwardFrame("tenant", k1, k2, pkt),
	} {
		f, err := ReadFrame(bytes.NewReader(b), nil)
		if err != nil {
			t.Fatal(err)
		}
		g, err := ParseFrame(b)
		if err != nil || g.Type != f.Type || !bytes.Equal(g.Payload, f.Payload) {
			t.Fatalf("ParseFrame %v: %v", f.Type, err)
		}
		switch f.Type {
		case FrameSendPacket, FrameRecvPacket:
			k, p, err := f.Packet()
			if err != nil || !bytes.Equal(p, pkt) || (!k.Equal(k1) && !k.Equal(k2)) {
				t.Errorf("%v: %v %v %q", f.Type, err, k, p)
			}
		case FramePeerGone:
			k, r, err := f.PeerGone()
			if err != nil || !k.Equal(k1) || r != GoneNotHere {
				t.Errorf("peer-gone: %v %v %d", err, k, r)
			}
		case FrameError:
			c, k, s, err := f.Error()
			if err != nil || c != CodeNotAllowed || !k.Equal(k2) || s != "no" {
				t.Errorf("error: %v %d %v %q", err, c, k, s)
			}
		case FrameMeshPresence:
			tn, k, p, err := f.MeshPresence()
			if err != nil || tn != "tenant" || !k.Equal(k1) || !p {
				t.Errorf("presence: %v %q %v %v", err, tn, k, p)
			}
		case FrameMeshForward:
			tn, s, d, p, err := f.MeshForward()
			if err != nil || tn != "tenant" || !s.Equal(k1) || !d.Equal(k2) || !bytes.Equal(p, pkt) {
				t.Errorf("forward: %v %q %v %v %q", err, tn, s, d, p)
			}
		}
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{1, 0xff, 0xff, 0xff, 0xff}), nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{1, 0, 0, 0, 9, 1}), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
}

// FuzzReadFrame checks that the decoders never panic, never return or allocate
// more than MaxPayload, and agree with each other and with the encoder.
func FuzzReadFrame(f *testing.F) {
	var k key.NodePublic
	for _, b := range [][]byte{
		SendPacketFrame(k, []byte("x")), KeepAliveFrame(), PeerGoneFrame(k, 0), ErrorFrame(1, k, "e"),
		MeshPresenceFrame("t", k, true), MeshForwardFrame("t", k, k, []byte("p")),
		{1, 0xff, 0xff, 0xff, 0xff}, {0x11, 0, 0, 0, 1, 0xff},
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		fr, err := ReadFrame(r, nil)
		if err != nil {
			return
		}
		if len(fr.Payload) > MaxPayload || cap(fr.Payload) > MaxPayload {
			t.Fatalf("payload of %d (cap %d) bytes, limit %d", len(fr.Payload), cap(fr.Payload), MaxPayload)
		}
		consumed := len(b) - r.Len()
		pf, err := ParseFrame(b[:consumed])
		if err != nil || pf.Type != fr.Type || !bytes.Equal(pf.Payload, fr.Payload) {
			t.Fatalf("ParseFrame disagrees: %v", err)
		}
		if re := AppendFrame(nil, fr.Type, fr.Payload); !bytes.Equal(re, b[:consumed]) {
			t.Fatalf("re-encoding gives % x, want % x", re, b[:consumed])
		}
		fr.Packet()
		fr.PeerGone()
		fr.Error()
		fr.MeshPresence()
		if _, _, _, pkt, err := fr.MeshForward(); err == nil && len(pkt) > MaxPacket {
			t.Fatalf("%d-byte forwarded packet", len(pkt))
		}
	})
}
