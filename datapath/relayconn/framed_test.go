package relayconn

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/relay/framed"
)

func TestFramed(t *testing.T) {
	machA, machB := newPrivate(t), newPrivate(t)
	keyA, keyB := newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	fr := startFramedRelay(t, map[key.MachinePublic]key.NodePublic{
		machA.MachinePublic(): keyA, machB.MachinePublic(): keyB,
	})
	for _, tc := range []struct {
		name      string
		urls      func() []string
		transport string
	}{
		{"tcp", func() []string { return []string{fr.url(framed.TransportTCP)} }, "tcp"},
		{"ws", func() []string { return []string{fr.url(framed.TransportWS)} }, "ws"},
		{"fallback", func() []string { return []string{closedURL(t), fr.url(framed.TransportWS)} }, "ws"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wgA, wgB := fakeWG(t), fakeWG(t)
			reg := prometheus.NewPedanticRegistry()
			pxA := newProxy(t, wgA, machA, func(c *Config) { c.Registry = reg })
			pxB := newProxy(t, wgB, machB, nil)
			epsA := mustSet(t, pxA, framedPathOf(keyB, fr, tc.urls()...))
			epsB := mustSet(t, pxB, framedPathOf(keyA, fr, tc.urls()...))
			eventually(t, "both connected over "+tc.transport, func() bool {
				a, b := status(pxA, keyB), status(pxB, keyA)
				return a.Transport == tc.transport && b.Transport == tc.transport && a.Bound && b.Bound
			})
			const n = 3
			exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], tc.name, n)
			statusEventually(t, pxA, keyB, "A's counters", func(st PeerStatus) bool {
				return st.Mode == ModeFramed && !st.PeerBound && st.TxPackets >= n && st.RxPackets >= n
			})
			eventually(t, "the packets counted in over "+tc.transport, func() bool {
				return metricValue(t, reg, "cvlan_agent_relay_packets_total", "in", tc.transport) >= n
			})
			if got := metricValue(t, reg, "cvlan_agent_relay_framed_connected"); got != 1 {
				t.Errorf("framed_connected = %v, want 1", got)
			}
			if tc.name == "fallback" && metricValue(t, reg, "cvlan_agent_relay_framed_dial_failures_total") < 1 {
				t.Error("the closed URL's failure was not counted")
			}
		})
	}
}

// TestFramedShared checks that peers on one relay share a connection, that a
// packet from a node without a path is dropped, that a notice about a peer leaves
// the connection up, and that the connection closes with its last path.
func TestFramedShared(t *testing.T) {
	machA, machB, machC := newPrivate(t), newPrivate(t), newPrivate(t)
	keyA, keyB, keyC := newPrivate(t).NodePublic(), newPrivate(t).NodePublic(), newPrivate(t).NodePublic()
	fr := startFramedRelay(t, map[key.MachinePublic]key.NodePublic{
		machA.MachinePublic(): keyA, machB.MachinePublic(): keyB, machC.MachinePublic(): keyC,
	})
	url := fr.url(framed.TransportTCP)
	wgA, wgB, wgC := fakeWG(t), fakeWG(t), fakeWG(t)
	pxA := newProxy(t, wgA, machA, nil)
	pxB := newProxy(t, wgB, machB, nil)
	pxC := newProxy(t, wgC, machC, nil)

	// A reaches B and C (not connected yet) through one connection.
	epsA := mustSet(t, pxA, framedPathOf(keyB, fr, url), framedPathOf(keyC, fr, url))
	epsB := mustSet(t, pxB, framedPathOf(keyA, fr, url))
	if n := len(pxA.clientsSnapshot()); n != 1 {
		t.Fatalf("%d relay clients for one relay, want 1", n)
	}
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "shared", 1)
	if _, err := wgA.WriteToUDPAddrPort([]byte("to C"), epsA[keyC]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a peer-gone notice about C", func() bool { return status(pxA, keyC).LastError != "" })
	if st := status(pxA, keyB); !st.Bound {
		t.Errorf("the connection went down after a notice: %+v", st)
	}

	// C's packets to A arrive once C has a path; before, A drops them.
	epsC := mustSet(t, pxC, framedPathOf(keyB, fr, url)) // C has no path for A
	mustSet(t, pxA, framedPathOf(keyB, fr, url))         // and A none for C
	eventually(t, "C connected", func() bool { return status(pxC, keyB).Bound })
	_ = epsC
	before := pxA.m.drops[dropUnknownPeer].Load()
	c := pxC.clientsSnapshot()[0]
	eventually(t, "A to drop a packet from C", func() bool {
		if cl := c.cur.Load(); cl != nil {
			cl.Send(keyA, []byte("unexpected"))
		}
		return pxA.m.drops[dropUnknownPeer].Load() > before
	})
	exchange(t, wgA, epsA[keyB], wgB, epsB[keyA], "still", 1)

	mustSet(t, pxA)
	if n := len(pxA.clientsSnapshot()); n != 0 {
		t.Errorf("%d relay clients without paths", n)
	}
}

func (px *Proxy) clientsSnapshot() []*relayClient {
	px.mu.Lock()
	defer px.mu.Unlock()
	var out []*relayClient
	for _, rc := range px.clients {
		out = append(out, rc)
	}
	return out
}
