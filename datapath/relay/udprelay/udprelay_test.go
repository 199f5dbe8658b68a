package udprelay

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cvlan/cvlan/datapath/relay/session"
)

// These tests run on loopback and need no privileges.

func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	var conns []*net.UDPConn
	var ports []uint16
	for range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		ports = append(ports, uint16(c.LocalAddr().(*net.UDPAddr).Port))
	}
	for _, c := range conns {
		c.Close()
	}
	return ports
}

func newSpec(t *testing.T, id session.ID) session.Spec {
	t.Helper()
	sp := session.Spec{ID: id}
	ports := freePorts(t, 2)
	sp.Ports = [2]uint16{ports[0], ports[1]}
	for i := range sp.Tokens {
		rand.Read(sp.Tokens[i][:])
	}
	return sp
}

type fixture struct {
	sv  *Server
	cnt *session.Counters
	s   *session.Session
}

func newFixture(t *testing.T, addr netip.Addr, maxPacket int) *fixture {
	t.Helper()
	f := &fixture{cnt: &session.Counters{}}
	f.sv = New(Config{
		Addr: addr, MaxPacket: maxPacket, Counters: f.cnt, BatchSize: 8,
		OnBind: func(s *session.Session, side session.Side, pkt []byte, from netip.AddrPort) []byte {
			res, err := s.Bind(side, pkt, from, time.Now())
			if err != nil {
				f.cnt.Drop(session.Reason(err))
				return nil
			}
			f.cnt.Binds.Add(1)
			return res.Ack
		},
	})
	t.Cleanup(func() {
		if err := f.sv.CloseAll(); err != nil {
			t.Errorf("CloseAll: %v", err)
		}
	})
	f.s = session.New(newSpec(t, 42), time.Now())
	if err := f.sv.Open(f.s); err != nil {
		t.Fatal(err)
	}
	return f
}

func peer(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn, to netip.AddrPort, b []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatalf("sending to %s: %v", to, err)
	}
}

// recv reads one datagram within a second.
func recv(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("reading at %s: %v", c.LocalAddr(), err)
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronization
	}
}

func (f *fixture) drops(r session.DropReason) uint64 { return f.cnt.Drops[r].Load() }

func (f *fixture) bind(t *testing.T, c *net.UDPConn, relay netip.Addr, side session.Side, counter uint64) session.Message {
	t.Helper()
	sp := f.s.Spec()
	pkt := session.Message{Type: session.TypeBind, Side: side, Session: sp.ID, Counter: counter}.Append(nil, &sp.Tokens[side])
	send(t, c, netip.AddrPortFrom(relay, sp.Ports[side]), pkt)
	ack, from := recv(t, c)
	if from.Port() != sp.Ports[side] {
		t.Errorf("ack from %s, want the session port %d", from, sp.Ports[side])
	}
	m, err := session.Parse(ack)
	if err != nil || !session.Verify(ack, &sp.Tokens[side]) || m.Type != session.TypeAck || m.Counter != counter {
		t.Fatalf("ack %+v, %v", m, err)
	}
	return m
}

func TestRelay(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	f := newFixture(t, lo, 0)
	sp := f.s.Spec()
	portA, portB := netip.AddrPortFrom(lo, sp.Ports[0]), netip.AddrPortFrom(lo, sp.Ports[1])
	a, b, c := peer(t, "udp4", "127.0.0.1:0"), peer(t, "udp4", "127.0.0.1:0"), peer(t, "udp4", "127.0.0.1:0")

	send(t, a, portA, []byte("before bind"))
	eventually(t, "a not_bound drop", func() bool { return f.drops(session.DropNotBound) == 1 })

	if m := f.bind(t, a, lo, session.SideA, 1); m.Flags != 0 {
		t.Errorf("A's ack says the peer is bound")
	}
	send(t, a, portA, []byte("peer missing"))
	eventually(t, "a peer_not_bound drop", func() bool { return f.drops(session.DropPeerNotBound) == 1 })

	if m := f.bind(t, b, lo, session.SideB, 1); m.Flags != session.FlagPeerBound {
		t.Errorf("B's ack does not say the peer is bound")
	}

	send(t, a, portA, []byte("hello b"))
	if got, from := recv(t, b); string(got) != "hello b" || from != portB {
		t.Errorf("B got %q from %s, want %q from %s", got, from, "hello b", portB)
	}
	send(t, b, portB, []byte("hello a"))
	if got, from := recv(t, a); string(got) != "hello a" || from != portA {
		t.Errorf("A got %q from %s, want %q from %s", got, from, "hello a", portA)
	}

	// A third party: its data is not relayed, A's replayed bind is refused, a bind
	// for side B on A's port is refused.
	send(t, c, portA, []byte("intruder"))
	eventually(t, "c not_bound drop", func() bool { return f.drops(session.DropNotBound) == 2 })
	send(t, c, portA, session.Message{Type: session.TypeBind, Side: session.SideA, Session: sp.ID, Counter: 1}.Append(nil, &sp.Tokens[0]))
	eventually(t, "replay drop", func() bool { return f.drops(session.DropReplay) == 1 })
	send(t, c, portA, session.Message{Type: session.TypeBind, Side: session.SideB, Session: sp.ID, Counter: 9}.Append(nil, &sp.Tokens[1]))
	eventually(t, "wrong side drop", func() bool { return f.drops(session.DropWrongSide) == 1 })
	send(t, c, portA, session.Message{Type: session.TypeBind, Side: session.SideA, Session: sp.ID, Counter: 9}.Append(nil, &sp.Tokens[1]))
	eventually(t, "bad MAC drop", func() bool { return f.drops(session.DropBadMAC) == 1 })
	send(t, c, portA, []byte(session.Magic+"garbage"))
	eventually(t, "malformed drop", func() bool { return f.drops(session.DropMalformed) == 1 })
	if ep, _ := f.s.Peer(session.SideA); ep != a.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("A's endpoint became %s", ep)
	}

	// A burst, in batches.
	const burst = 300
	for i := range burst {
		send(t, a, portA, fmt.Appendf(nil, "packet %d", i))
		if i%50 == 49 {
			for j := i - 49; j <= i; j++ {
				if got, _ := recv(t, b); string(got) != fmt.Sprintf("packet %d", j) {
					t.Fatalf("B got %q, want packet %d", got, j)
				}
			}
		}
	}
	if p, _ := f.s.GoCounters(session.SideA); p != burst+1 {
		t.Errorf("session counted %d packets from A, want %d", p, burst+1)
	}
	if got := f.cnt.Packets.Load(); got != burst+2 {
		t.Errorf("relayed %d packets, want %d", got, burst+2)
	}

	// A moves to another port (NAT rebinding): traffic follows.
	a2 := peer(t, "udp4", "127.0.0.1:0")
	f.bind(t, a2, lo, session.SideA, 2)
	send(t, b, portB, []byte("to the new a"))
	if got, _ := recv(t, a2); string(got) != "to the new a" {
		t.Errorf("A's new endpoint got %q", got)
	}
	send(t, a, portA, []byte("from the old a"))
	eventually(t, "old endpoint dropped", func() bool { return f.drops(session.DropNotBound) == 3 })

	// Closing frees the ports.
	if err := f.sv.Close(sp.ID); err != nil {
		t.Fatal(err)
	}
	if f.sv.IsOpen(sp.ID) {
		t.Error("session still open after Close")
	}
	for _, p := range sp.Ports {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice(), Port: int(p)})
		if err != nil {
			t.Errorf("port %d still in use after Close: %v", p, err)
			continue
		}
		c.Close()
	}
}

// TestDualStack relays between an IPv4 and an IPv6 peer through dual-stack sockets.
func TestDualStack(t *testing.T) {
	f := newFixture(t, netip.Addr{}, 0)
	sp := f.s.Spec()
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	a, b := peer(t, "udp4", "127.0.0.1:0"), peer(t, "udp6", "[::1]:0")
	f.bind(t, a, lo4, session.SideA, 1)
	f.bind(t, b, lo6, session.SideB, 1)
	send(t, a, netip.AddrPortFrom(lo4, sp.Ports[0]), []byte("4 to 6"))
	if got, from := recv(t, b); string(got) != "4 to 6" || from != netip.AddrPortFrom(lo6, sp.Ports[1]) {
		t.Errorf("B got %q from %s", got, from)
	}
	send(t, b, netip.AddrPortFrom(lo6, sp.Ports[1]), []byte("6 to 4"))
	if got, from := recv(t, a); string(got) != "6 to 4" || from != netip.AddrPortFrom(lo4, sp.Ports[0]) {
		t.Errorf("A got %q from %s", got, from)
	}
}

func TestTooBig(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	f := newFixture(t, lo, 128)
	sp := f.s.Spec()
	a, b := peer(t, "udp4", "127.0.0.1:0"), peer(t, "udp4", "127.0.0.1:0")
	f.bind(t, a, lo, session.SideA, 1)
	f.bind(t, b, lo, session.SideB, 1)
	send(t, a, netip.AddrPortFrom(lo, sp.Ports[0]), make([]byte, 129))
	eventually(t, "too_big drop", func() bool { return f.drops(session.DropTooBig) == 1 })
	send(t, a, netip.AddrPortFrom(lo, sp.Ports[0]), bytes.Repeat([]byte{9}, 128))
	if got, _ := recv(t, b); len(got) != 128 {
		t.Errorf("B got %d bytes, want 128", len(got))
	}
}

func TestOpenErrors(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	f := newFixture(t, lo, 0)
	if err := f.sv.Open(f.s); err == nil {
		t.Error("opening an open session again succeeded")
	}
	// A session whose port is taken does not open, and leaves its other port free.
	sp := newSpec(t, 43)
	peer(t, "udp4", fmt.Sprintf("127.0.0.1:%d", sp.Ports[1]))
	if err := f.sv.Open(session.New(sp, time.Now())); err == nil {
		t.Fatal("Open succeeded on a port in use")
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice(), Port: int(sp.Ports[0])})
	if err != nil {
		t.Errorf("the free port of a failed Open stayed bound: %v", err)
	} else {
		c.Close()
	}
	if err := f.sv.CloseAll(); err != nil {
		t.Fatal(err)
	}
	if err := f.sv.Open(session.New(newSpec(t, 44), time.Now())); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after CloseAll: %v, want ErrClosed", err)
	}
}

// TestNoLostWakeup plays ping-pong through the relay, one datagram in flight at a
// time, so that datagrams often arrive just as a reader goes back to waiting: none
// may be left unread in a socket.
func TestNoLostWakeup(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	f := newFixture(t, lo, 0)
	sp := f.s.Spec()
	portA, portB := netip.AddrPortFrom(lo, sp.Ports[0]), netip.AddrPortFrom(lo, sp.Ports[1])
	a, b := peer(t, "udp4", "127.0.0.1:0"), peer(t, "udp4", "127.0.0.1:0")
	f.bind(t, a, lo, session.SideA, 1)
	f.bind(t, b, lo, session.SideB, 1)
	for i := range 3000 {
		send(t, a, portA, []byte{4, 0, 0, 0, byte(i)})
		recv(t, b)
		send(t, b, portB, []byte{4, 0, 0, 0, byte(i)})
		recv(t, a)
	}
}
