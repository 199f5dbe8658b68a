package relay

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// These tests run the Go path on loopback and need no privileges.

var lo = netip.MustParseAddr("127.0.0.1")

func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	var ports []uint16
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, uint16(c.LocalAddr().(*net.UDPAddr).Port))
		defer c.Close()
	}
	return ports
}

func newLoopbackRelay(t *testing.T) *Relay {
	t.Helper()
	r, err := New(Options{Addr: lo, CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{XDP: "driver"},
		{XDP: xdprelay.ModeNative},
		{XDP: xdprelay.ModeGeneric},
		{IdleTimeout: -1},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v validates", o)
		}
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	for _, o := range []Options{{}, {XDP: xdprelay.ModeOff}, {XDP: xdprelay.ModeNative, Interfaces: []string{"eth0"}}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestSet(t *testing.T) {
	r := newLoopbackRelay(t)
	if len(r.XDP()) != 0 {
		t.Errorf("XDP attached without interfaces: %v", r.XDP())
	}
	p := freePorts(t, 6)
	s1, s2, s3 := newSpec(1, p[0], p[1]), newSpec(2, p[2], p[3]), newSpec(3, p[4], p[5])

	bad := s2
	bad.Ports[1] = s1.Ports[0]
	if err := r.Set([]session.Spec{s1, bad}); !errors.Is(err, session.ErrInvalidSpec) {
		t.Errorf("Set with a port collision: %v", err)
	}
	if r.Stats().Sessions != 0 {
		t.Error("an invalid Set added sessions")
	}

	// s3's port is taken: s1 and s2 are served, s3 is reported and retried later.
	blocker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice(), Port: int(s3.Ports[1])})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set([]session.Spec{s1, s2, s3}); err == nil {
		t.Error("Set succeeded with a port in use")
	}
	if got := r.Stats().Sessions; got != 2 {
		t.Errorf("%d sessions served, want 2", got)
	}
	blocker.Close()
	if err := r.Set([]session.Spec{s1, s2, s3}); err != nil {
		t.Errorf("Set after freeing the port: %v", err)
	}
	if err := r.Set([]session.Spec{s3, s2, s1}); !errors.Is(err, ErrNoChanges) {
		t.Errorf("the same sessions again: %v, want ErrNoChanges", err)
	}

	// Bind both sides of s1 and relay a packet; keeping s1 in the next Set keeps the
	// binding, removing s2 frees its ports.
	a, b := udpPeer(t), udpPeer(t)
	bind(t, a, netip.AddrPortFrom(lo, s1.Ports[0]), s1, session.SideA, false)
	bind(t, b, netip.AddrPortFrom(lo, s1.Ports[1]), s1, session.SideB, true)
	if err := r.Set([]session.Spec{s1, s3}); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b, netip.AddrPortFrom(lo, s1.Ports[0]), netip.AddrPortFrom(lo, s1.Ports[1]), 3)
	for _, port := range s2.Ports {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice(), Port: int(port)})
		if err != nil {
			t.Errorf("port %d of a removed session still bound: %v", port, err)
		} else {
			c.Close()
		}
	}

	// Counters move after the send returns: the packets may arrive first.
	eventually(t, "three packets counted", func() bool { return r.Stats().Go.Packets == 3 })

	// Idle expiry on the Go path.
	r.check(time.Now().Add(r.opts.IdleTimeout+time.Second), 0)
	st := r.Stats()
	if st.Active != 0 || st.Expired != 1 || st.Go.Packets != 3 || st.Binds < 2 {
		t.Errorf("after expiry: %+v", st)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collector())
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gathering the metrics: %v", err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Set([]session.Spec{s1}); err == nil {
		t.Error("Set after Close succeeded")
	}
}

func udpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: lo.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
