package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func testToken(seed byte) Token {
	var t Token
	for i := range t {
		t[i] = seed + byte(i)
	}
	return t
}

func testSpec() Spec {
	return Spec{ID: 0x1122334455667788, Ports: [2]uint16{40001, 40002}, Tokens: [2]Token{testToken(1), testToken(101)}}
}

var (
	epA  = netip.MustParseAddrPort("192.0.2.10:51820")
	epA2 = netip.MustParseAddrPort("192.0.2.10:40999")
	epB  = netip.MustParseAddrPort("[2001:db8::20]:51820")
	t0   = time.Unix(1_800_000_000, 0)
)

func bindPacket(sp Spec, side Side, counter uint64) []byte {
	return Message{Type: TypeBind, Side: side, Session: sp.ID, Counter: counter}.Append(nil, &sp.Tokens[side])
}

func TestFormat(t *testing.T) {
	sp := testSpec()
	b := bindPacket(sp, SideB, 0x0102030405060708)
	if len(b) != Size {
		t.Fatalf("bind is %d bytes, want %d", len(b), Size)
	}
	want := []byte{'c', 'v', 'R', 'B', Version, byte(TypeBind), byte(SideB), 0,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 1, 2, 3, 4, 5, 6, 7, 8}
	if !bytes.Equal(b[:macOffset], want) {
		t.Errorf("header\n got % x\nwant % x", b[:macOffset], want)
	}
	m, err := Parse(b)
	if err != nil || m != (Message{Type: TypeBind, Side: SideB, Session: sp.ID, Counter: 0x0102030405060708}) {
		t.Errorf("Parse = %+v, %v", m, err)
	}
	if !Verify(b, &sp.Tokens[SideB]) || Verify(b, &sp.Tokens[SideA]) {
		t.Error("MAC verifies under the wrong token or not under the right one")
	}
	// WireGuard messages (type 1..4 as a little-endian u32) are never binds.
	for typ := uint32(1); typ <= 4; typ++ {
		wg := binary.LittleEndian.AppendUint32(nil, typ)
		wg = append(wg, make([]byte, 60)...)
		if IsBind(wg) {
			t.Errorf("WireGuard message type %d looks like a bind", typ)
		}
	}
	if !IsBind(b) || IsBind(b[:3]) {
		t.Error("IsBind misjudges a bind or a 3-byte prefix")
	}
}

func TestBind(t *testing.T) {
	sp := testSpec()
	mutate := func(b []byte, f func([]byte)) []byte {
		b = bytes.Clone(b)
		f(b)
		return b
	}
	good := bindPacket(sp, SideA, 100)
	for _, tc := range []struct {
		name string
		side Side // the side whose port the packet arrives on
		pkt  []byte
		want error
	}{
		{"wrong token", SideA, Message{Type: TypeBind, Side: SideA, Session: sp.ID, Counter: 100}.Append(nil, &sp.Tokens[SideB]), ErrBadMAC},
		{"MAC flipped", SideA, mutate(good, func(b []byte) { b[Size-1] ^= 1 }), ErrBadMAC},
		{"counter tampered", SideA, mutate(good, func(b []byte) { b[23]++ }), ErrBadMAC},
		{"wrong side", SideB, good, ErrWrongSide},
		{"other session", SideA, Message{Type: TypeBind, Side: SideA, Session: sp.ID + 1, Counter: 100}.Append(nil, &sp.Tokens[SideA]), ErrUnknownSession},
		{"truncated", SideA, good[:Size-1], ErrTruncated},
		{"trailing byte", SideA, append(bytes.Clone(good), 0), ErrTruncated},
		{"empty", SideA, nil, ErrTruncated},
		{"magic", SideA, mutate(good, func(b []byte) { b[0] = 'C' }), ErrMagic},
		{"version", SideA, mutate(good, func(b []byte) { b[4] = 2 }), ErrVersion},
		{"ack sent to the relay", SideA, Message{Type: TypeAck, Side: SideA, Session: sp.ID, Counter: 100}.Append(nil, &sp.Tokens[SideA]), ErrType},
		{"type 0", SideA, mutate(good, func(b []byte) { b[5] = 0 }), ErrType},
		{"side 2", SideA, mutate(good, func(b []byte) { b[6] = 2 }), ErrSide},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(sp, t0)
			if _, err := s.Bind(tc.side, tc.pkt, epA, t0); !errors.Is(err, tc.want) {
				t.Fatalf("Bind = %v, want %v", err, tc.want)
			}
			if _, ok := s.Peer(tc.side); ok {
				t.Error("a rejected bind bound the side")
			}
			// The rejected packet did not consume the counter.
			if _, err := s.Bind(SideA, good, epA, t0); err != nil {
				t.Errorf("the good bind after a rejected one: %v", err)
			}
		})
	}
}

func TestBindSequence(t *testing.T) {
	sp := testSpec()
	s := New(sp, t0)
	t1 := t0.Add(time.Second)

	res, err := s.Bind(SideA, bindPacket(sp, SideA, 100), netip.MustParseAddrPort("[::ffff:192.0.2.10]:51820"), t1)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Moved || res.Previous.IsValid() || res.Active {
		t.Errorf("first bind of A: %+v, want moved, no previous, not active", res)
	}
	if p, ok := s.Peer(SideA); !ok || p != epA {
		t.Errorf("A's endpoint = %v %v, want the unmapped %v", p, ok, epA)
	}
	checkAck(t, res.Ack, sp, SideA, 100, 0)
	if !s.LastSeen().Equal(t1) {
		t.Errorf("LastSeen = %v, want %v", s.LastSeen(), t1)
	}

	for _, c := range []uint64{100, 99, 0} {
		if _, err := s.Bind(SideA, bindPacket(sp, SideA, c), epA, t1); !errors.Is(err, ErrReplay) {
			t.Errorf("bind with counter %d after 100: %v, want ErrReplay", c, err)
		}
	}
	// The same endpoint again: accepted, not moved.
	res, err = s.Bind(SideA, bindPacket(sp, SideA, 101), epA, t1)
	if err != nil || res.Moved {
		t.Errorf("rebind from the same endpoint: %+v, %v", res, err)
	}

	// Counters are per side: B may start lower than A.
	res, err = s.Bind(SideB, bindPacket(sp, SideB, 7), epB, t1)
	if err != nil || !res.Moved || !res.Active || !s.Active() {
		t.Fatalf("bind of B: %+v, %v; want moved and active", res, err)
	}
	checkAck(t, res.Ack, sp, SideB, 7, FlagPeerBound)

	// A moves (NAT rebinding).
	res, err = s.Bind(SideA, bindPacket(sp, SideA, 200), epA2, t1)
	if err != nil || !res.Moved || res.Previous != epA || !res.Active {
		t.Errorf("A moving: %+v, %v", res, err)
	}

	// Expiry forgets endpoints but not counters.
	s.Unbind()
	if s.Active() {
		t.Error("active after Unbind")
	}
	if _, err := s.Bind(SideA, bindPacket(sp, SideA, 200), epA, t1); !errors.Is(err, ErrReplay) {
		t.Errorf("replaying the last bind after Unbind: %v, want ErrReplay", err)
	}
	if _, err := s.Bind(SideA, bindPacket(sp, SideA, 201), epA, t1); err != nil {
		t.Errorf("a fresh bind after Unbind: %v", err)
	}
}

func checkAck(t *testing.T, ack []byte, sp Spec, side Side, counter uint64, flags uint8) {
	t.Helper()
	m, err := Parse(ack)
	want := Message{Type: TypeAck, Side: side, Flags: flags, Session: sp.ID, Counter: counter}
	if err != nil || m != want {
		t.Errorf("ack = %+v, %v; want %+v", m, err, want)
	}
	if !Verify(ack, &sp.Tokens[side]) {
		t.Error("ack MAC does not verify under the side's token")
	}
}

func TestReason(t *testing.T) {
	for err, want := range map[error]DropReason{
		ErrBadMAC: DropBadMAC, ErrReplay: DropReplay, ErrUnknownSession: DropUnknownSession,
		ErrWrongSide: DropWrongSide, ErrTruncated: DropMalformed, ErrMagic: DropMalformed,
		ErrVersion: DropMalformed, ErrType: DropMalformed, ErrSide: DropMalformed,
	} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %v, want %v", err, got, want)
		}
	}
	for r := DropReason(0); r < NumDropReasons; r++ {
		if r.String() == "" || r.String() == "unknown" {
			t.Errorf("drop reason %d has no name", r)
		}
	}
}

func FuzzParseBind(f *testing.F) {
	sp := testSpec()
	f.Add(bindPacket(sp, SideA, 1))
	f.Add(bindPacket(sp, SideB, 1<<63))
	f.Add(Message{Type: TypeAck, Side: SideA, Flags: FlagPeerBound, Session: sp.ID, Counter: 5}.Append(nil, &sp.Tokens[SideA]))
	f.Add([]byte(Magic))
	f.Add([]byte{1, 0, 0, 0})
	f.Add(make([]byte, Size))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err == nil {
			if len(b) != Size || !IsBind(b) || !m.Side.Valid() {
				t.Fatalf("Parse accepted %x as %+v", b, m)
			}
			// What Parse decoded is what Append encodes.
			if re := m.Append(nil, &sp.Tokens[SideA]); !bytes.Equal(re[:macOffset], b[:macOffset]) {
				t.Fatalf("re-encoding %+v: % x, input % x", m, re[:macOffset], b[:macOffset])
			}
		}
		s := New(sp, t0)
		for _, side := range []Side{SideA, SideB} {
			res, err := s.Bind(side, b, epA, t0)
			if err == nil && !Verify(b, &sp.Tokens[side]) {
				t.Fatalf("Bind accepted %x without a valid MAC: %+v", b, res)
			}
		}
	})
}
