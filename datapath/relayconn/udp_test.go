package relayconn

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/datapath/relay"
	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

func TestUDP(t *testing.T) {
	spec := newSpec(t, 7)
	r := startRelay(t, spec)
	keyA, keyB := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	wgA, wgB := fakeWG(t), fakeWG(t)
	reg := prometheus.NewPedanticRegistry()
	pxA := newProxy(t, wgA, newPrivate(t), func(c *Config) { c.Registry = reg })
	pxB := newProxy(t, wgB, newPrivate(t), nil)

	epsA := mustSet(t, pxA, udpPathOf(keyB, spec, session.SideA))
	epsB := mustSet(t, pxB, udpPathOf(keyA, spec, session.SideB))
	for _, ep := range []netip.AddrPort{epsA[keyB], epsB[keyA]} {
		if ep.Addr() != loopback || ep.Port() == 0 {
			t.Fatalf("endpoint %s, want 127.0.0.1:port", ep)
		}
	}
	eventually(t, "both sides bound, each knowing the other is", func() bool {
		a, b := status(pxA, keyB), status(pxB, keyA)
		return a.Bound && a.PeerBound && b.Bound && b.PeerBound
	})
	const n = 5
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "udp", n)

	statusEventually(t, pxA, keyB, "A's counters", func(st PeerStatus) bool {
		return st.Mode == ModeUDP && st.Transport == "udp" && st.TxPackets >= n && st.RxPackets >= n &&
			st.TxBytes >= 10*st.TxPackets && st.RxBytes >= 10*st.RxPackets
	})
	eventually(t, "the relay to count the packets", func() bool { return r.Stats().Go.Packets >= 2*n })
	eventually(t, "the packets counted out over udp", func() bool {
		return metricValue(t, reg, "cvlan_agent_relay_packets_total", "out", "udp") >= n
	})
	if got := pxA.m.acks.Load(); got == 0 {
		t.Error("no acks counted")
	}

	// A datagram to an endpoint from anywhere but WireGuard's port is dropped.
	stranger := fakeWG(t)
	before := pxA.m.drops[dropForeignSource].Load()
	if _, err := stranger.WriteToUDPAddrPort([]byte("intruder"), epsA[keyB]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stranger's datagram counted", func() bool { return pxA.m.drops[dropForeignSource].Load() > before })
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "after the stranger", 1)

	// An ack with a valid MAC for another counter, and garbage with the bind magic,
	// are counted and change nothing.
	u := pxA.peers[keyB].backend().(*udpPath)
	before = pxA.m.drops[dropInvalidAck].Load()
	u.handleAck(session.Message{Type: session.TypeAck, Side: session.SideA, Session: spec.ID, Counter: 1}.Append(nil, &spec.Tokens[0]))
	u.handleAck([]byte(session.Magic + "garbage"))
	if got := pxA.m.drops[dropInvalidAck].Load() - before; got != 2 {
		t.Errorf("%d invalid acks counted, want 2", got)
	}
}

// metricValue is the value of the series of a gathered metric whose label values
// are labels, in the order the metric declares them.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for i, lp := range m.GetLabel() {
				if lp.GetValue() != labels[i] {
					continue metric
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func TestUDPWrongToken(t *testing.T) {
	good, bad := newSpec(t, 1), newSpec(t, 2)
	r := startRelay(t, good, bad)
	keyA, keyB := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	wgA, wgB := fakeWG(t), fakeWG(t)
	pxA := newProxy(t, wgA, newPrivate(t), nil)
	pxB := newProxy(t, wgB, newPrivate(t), nil)

	// A binds side A of bad with side B's token; B binds side B correctly.
	wrong := udpPathOf(keyB, bad, session.SideA)
	wrong.Token = bad.Tokens[session.SideB]
	epsA := mustSet(t, pxA, wrong)
	epsB := mustSet(t, pxB, udpPathOf(keyA, bad, session.SideB))

	eventually(t, "the relay to refuse three of A's binds", func() bool {
		return r.Stats().Drops[session.DropBadMAC] >= 3
	})
	eventually(t, "B to be bound", func() bool { return status(pxB, keyA).Bound })
	if st := status(pxA, keyB); st.Bound || st.PeerBound || st.Transport != "" {
		t.Errorf("A's path with a wrong token: %+v", st)
	}
	if st := status(pxB, keyA); st.PeerBound {
		t.Errorf("B believes A is bound: %+v", st)
	}
	for _, s := range r.Sessions() {
		if s.ID == bad.ID && s.Endpoints[session.SideA].IsValid() {
			t.Errorf("side A of the session bound to %s with a wrong token", s.Endpoints[session.SideA])
		}
	}
	if _, err := wgA.WriteToUDPAddrPort([]byte("through?"), epsA[keyB]); err != nil {
		t.Fatal(err)
	}
	silent(t, wgB, 300*time.Millisecond)
	_ = epsB
}

// TestUDPRelayRestart restarts the relay on the same ports: the paths bind again
// and traffic resumes.
func TestUDPRelayRestart(t *testing.T) {
	spec := newSpec(t, 9)
	r, err := relay.New(relay.Options{XDP: xdprelay.ModeOff, Addr: loopback, CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set([]session.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	keyA, keyB := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	wgA, wgB := fakeWG(t), fakeWG(t)
	slowRefresh := func(c *Config) { c.BindRefresh = time.Hour } // recovery must not need it
	pxA := newProxy(t, wgA, newPrivate(t), slowRefresh)
	pxB := newProxy(t, wgB, newPrivate(t), slowRefresh)
	epsA := mustSet(t, pxA, udpPathOf(keyB, spec, session.SideA))
	epsB := mustSet(t, pxB, udpPathOf(keyA, spec, session.SideB))
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "before", 2)

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := startRelay(t, spec)
	// Both sides send: each notices that it gets nothing back and binds again,
	// long before its refresh.
	got := [2]bool{}
	buf := make([]byte, maxPacket)
	eventually(t, "traffic both ways through the restarted relay", func() bool {
		for i, c := range []struct {
			from, at *net.UDPConn
			to       netip.AddrPort
		}{{wgA, wgB, epsA[keyB]}, {wgB, wgA, epsB[keyA]}} {
			if _, err := c.from.WriteToUDPAddrPort([]byte("after"), c.to); err != nil {
				t.Fatal(err)
			}
			c.at.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, _, err := c.at.ReadFromUDPAddrPort(buf); err == nil {
				got[i] = true
			}
		}
		return got[0] && got[1]
	})
	if r2.Stats().Binds < 2 {
		t.Errorf("the restarted relay accepted %d binds, want both sides'", r2.Stats().Binds)
	}
}

// TestUDPIPv6 carries packets over a relay on ::1 (the loopback endpoints stay
// IPv4).
func TestUDPIPv6(t *testing.T) {
	lo6 := netip.IPv6Loopback()
	r, err := relay.New(relay.Options{XDP: xdprelay.ModeOff, Addr: lo6, CheckInterval: time.Hour})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	spec := newSpec(t, 6)
	if err := r.Set([]session.Spec{spec}); err != nil {
		if strings.Contains(err.Error(), "address") {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	keyA, keyB := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	wgA, wgB := fakeWG(t), fakeWG(t)
	pxA := newProxy(t, wgA, newPrivate(t), nil)
	pxB := newProxy(t, wgB, newPrivate(t), nil)
	pa, pb := udpPathOf(keyB, spec, session.SideA), udpPathOf(keyA, spec, session.SideB)
	pa.Relay = netip.AddrPortFrom(lo6, pa.Relay.Port())
	pb.Relay = netip.AddrPortFrom(lo6, pb.Relay.Port())
	epsA, epsB := mustSet(t, pxA, pa), mustSet(t, pxB, pb)
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "v6", 2)
}

func TestNextCounter(t *testing.T) {
	px := &Proxy{}
	px.counter.Store(uint64(time.Now().Add(time.Hour).UnixNano())) // a clock that went back
	last := uint64(0)
	for range 1000 {
		c := px.nextCounter()
		if c <= last {
			t.Fatalf("counter %d after %d", c, last)
		}
		last = c
	}
}

func FuzzVerifyAck(f *testing.F) {
	tok := session.Token{1, 2, 3}
	pa := Path{Mode: ModeUDP, Session: 42, Side: session.SideB, Token: tok}
	f.Add(session.Message{Type: session.TypeAck, Side: session.SideB, Session: 42, Counter: 7, Flags: session.FlagPeerBound}.Append(nil, &tok))
	f.Add(session.Message{Type: session.TypeBind, Side: session.SideB, Session: 42, Counter: 7}.Append(nil, &tok))
	f.Add(session.Message{Type: session.TypeAck, Side: session.SideA, Session: 42, Counter: 7}.Append(nil, &tok))
	f.Add([]byte(session.Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := verifyAck(b, &pa)
		if !ok {
			return
		}
		// Only the exact ack the relay would write under our token is accepted.
		want := session.Message{Type: session.TypeAck, Side: pa.Side, Session: pa.Session, Flags: m.Flags, Counter: m.Counter}.Append(nil, &tok)
		if !bytes.Equal(b, want) {
			t.Fatalf("accepted %x, want %x", b, want)
		}
	})
}
