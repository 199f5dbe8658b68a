package relayconn

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/relay/framed"
	"github.com/cvlan/cvlan/datapath/relay/session"
)

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {WireGuardPort: 1, BindRetry: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestSwitch moves a peer from a UDP session to a framed relay and back: its
// loopback endpoint stays and packets flow on each path.
func TestSwitch(t *testing.T) {
	spec := newSpec(t, 3)
	startRelay(t, spec)
	machA, machB := newPrivate(t), newPrivate(t)
	keyA, keyB := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	fr := startFramedRelay(t, map[key.MachinePublic]key.NodePublic{
		machA.MachinePublic(): keyA, machB.MachinePublic(): keyB,
	})
	wgA, wgB := fakeWG(t), fakeWG(t)
	pxA := newProxy(t, wgA, machA, nil)
	pxB := newProxy(t, wgB, machB, nil)

	epsA := mustSet(t, pxA, udpPathOf(keyB, spec, session.SideA))
	epsB := mustSet(t, pxB, udpPathOf(keyA, spec, session.SideB))
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "udp", 2)

	url := fr.url(framed.TransportWS)
	epsA2 := mustSet(t, pxA, framedPathOf(keyB, fr, url))
	epsB2 := mustSet(t, pxB, framedPathOf(keyA, fr, url))
	if epsA2[keyB] != epsA[keyB] || epsB2[keyA] != epsB[keyA] {
		t.Fatalf("endpoints moved: A %s -> %s, B %s -> %s", epsA[keyB], epsA2[keyB], epsB[keyA], epsB2[keyA])
	}
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "framed", 2)
	statusEventually(t, pxA, keyB, "the switch to framed", func(st PeerStatus) bool {
		return st.Mode == ModeFramed && st.Transport == "ws" && st.TxPackets >= 4 && st.RxPackets >= 4
	})

	// Another URL for the same relay: one connection replaces the other.
	url = fr.url(framed.TransportTCP)
	mustSet(t, pxA, framedPathOf(keyB, fr, url))
	mustSet(t, pxB, framedPathOf(keyA, fr, url))
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "framed tcp", 2)
	statusEventually(t, pxA, keyB, "the URL change", func(st PeerStatus) bool { return st.Transport == "tcp" })
	if n := len(pxA.clientsSnapshot()); n != 1 {
		t.Errorf("%d framed clients for one relay", n)
	}

	epsA3 := mustSet(t, pxA, udpPathOf(keyB, spec, session.SideA))
	epsB3 := mustSet(t, pxB, udpPathOf(keyA, spec, session.SideB))
	if epsA3[keyB] != epsA[keyB] || epsB3[keyA] != epsB[keyA] {
		t.Fatal("endpoints moved switching back")
	}
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "udp again", 2)
	if n := len(pxA.clientsSnapshot()); n != 0 {
		t.Errorf("%d framed clients left without framed paths", n)
	}
}

func TestSetInvalid(t *testing.T) {
	spec := newSpec(t, 4)
	wg := fakeWG(t)
	px := newProxy(t, wg, newPrivate(t), nil)
	keyB, keyC, keyD := newPrivate(t).NodePublic(), newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	good := udpPathOf(keyB, spec, session.SideA)
	eps := mustSet(t, px, good)
	fr := &framedRelay{srv: mustServer(t)}

	zeroToken := udpPathOf(keyC, spec, session.SideA)
	zeroToken.Token = session.Token{}
	badSide := udpPathOf(keyC, spec, session.SideA)
	badSide.Side = 2
	noAddr := udpPathOf(keyC, spec, session.SideA)
	noAddr.Relay = netip.AddrPort{}
	noURLs := framedPathOf(keyC, fr)
	badURL := framedPathOf(keyC, fr, "ftp://relay")
	noKey := framedPathOf(keyC, fr, "https://relay")
	noKey.RelayKey = key.RelayPublic{}
	for _, tc := range []struct {
		name  string
		paths []Path
		peer  key.NodePublic
	}{
		{"zero token", []Path{good, zeroToken}, keyC},
		{"bad side", []Path{good, badSide}, keyC},
		{"no relay address", []Path{good, noAddr}, keyC},
		{"framed without URLs", []Path{good, noURLs}, keyC},
		{"framed with an ftp URL", []Path{good, badURL}, keyC},
		{"framed without relay key", []Path{good, noKey}, keyC},
		{"no mode", []Path{good, {Peer: keyC}}, keyC},
		{"duplicate peer", []Path{good, framedPathOf(keyB, fr, "https://relay")}, keyB},
		{"one session side, two peers", []Path{good, udpPathOf(keyC, spec, session.SideA)}, keyC},
		{"one relay, two URL lists", []Path{good, framedPathOf(keyC, fr, "https://relay"), framedPathOf(keyD, fr, "wss://relay")}, keyD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := px.Set(tc.paths)
			if !errors.Is(err, ErrInvalidPath) || !strings.Contains(err.Error(), tc.peer.String()) {
				t.Fatalf("Set: %v, want an ErrInvalidPath naming %s", err, tc.peer)
			}
			sts := px.Status()
			if len(sts) != 1 || sts[0].Peer != keyB || sts[0].Mode != ModeUDP {
				t.Errorf("Set changed the paths: %+v", sts)
			}
			if b := px.peers[keyB].backend().path(); !b.same(&good) {
				t.Errorf("the path of %s changed", keyB)
			}
		})
	}
	// Framed paths need a machine key.
	px2 := newProxy(t, wg, key.Private{}, nil)
	if _, err := px2.Set([]Path{framedPathOf(keyC, fr, "https://relay")}); !errors.Is(err, ErrInvalidPath) {
		t.Errorf("a framed path without a machine key: %v", err)
	}
	if again := mustSet(t, px, good); again[keyB] != eps[keyB] {
		t.Errorf("the same path again moved the endpoint")
	}
}

func mustServer(t *testing.T) *framed.Server {
	t.Helper()
	srv, err := framed.NewServer(framed.Config{Key: newPrivate(t), Authorizer: &testAuth{}})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestClose checks that removing paths and Close end every goroutine and close
// every socket the proxy opened.
func TestClose(t *testing.T) {
	spec := newSpec(t, 5)
	startRelay(t, spec)
	machA, machB := newPrivate(t), newPrivate(t)
	keyA, keyB, keyC := newPrivate(t).NodePublic(), newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	fr := startFramedRelay(t, map[key.MachinePublic]key.NodePublic{
		machA.MachinePublic(): keyA, machB.MachinePublic(): keyB,
	})
	wgA, wgB := fakeWG(t), fakeWG(t)
	var baseG, baseFDs int

	run := func(t *testing.T, remove func(pxA, pxB *Proxy)) []netip.AddrPort {
		baseG, baseFDs = runtime.NumGoroutine(), openFDs(t)
		pxA, err := New(Config{WireGuardPort: portOf(wgA), Machine: machA})
		if err != nil {
			t.Fatal(err)
		}
		pxB, err := New(Config{WireGuardPort: portOf(wgB), Machine: machB})
		if err != nil {
			t.Fatal(err)
		}
		url := fr.url(framed.TransportTCP)
		epsA := mustSet(t, pxA, udpPathOf(keyB, spec, session.SideA), framedPathOf(keyC, fr, closedURL(t), url))
		epsB := mustSet(t, pxB, udpPathOf(keyA, spec, session.SideB))
		exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "udp", 1)
		eventually(t, "A's framed connection", func() bool { return status(pxA, keyC).Bound })
		remove(pxA, pxB)
		if err := pxA.Close(); err != nil {
			t.Fatal(err)
		}
		if err := pxB.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := pxA.Set(nil); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Set after Close: %v", err)
		}
		return []netip.AddrPort{epsA[keyB], epsA[keyC], epsB[keyA]}
	}
	check := func(t *testing.T, eps []netip.AddrPort) {
		t.Helper()
		goroutinesBackTo(t, baseG)
		eventually(t, "the file descriptors closed", func() bool { return openFDs(t) <= baseFDs })
		for _, ep := range eps {
			c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ep))
			if err != nil {
				t.Errorf("endpoint %s still open: %v", ep, err)
				continue
			}
			c.Close()
		}
	}
	t.Run("Set", func(t *testing.T) {
		check(t, run(t, func(pxA, pxB *Proxy) {
			mustSet(t, pxA)
			mustSet(t, pxB)
			if len(pxA.Status()) != 0 {
				t.Error("peers left after Set(nil)")
			}
			goroutinesBackTo(t, baseG) // the proxies themselves run none
		}))
	})
	t.Run("Close", func(t *testing.T) {
		check(t, run(t, func(pxA, pxB *Proxy) {}))
	})
}
