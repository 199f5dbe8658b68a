package relay

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

const (
	portA = 40001
	portB = 40002
	wgA   = 51820
	wgB   = 51821
)

// session endpoints as the peers see them.
var (
	viaA = netip.AddrPortFrom(relayA, portA) // A sends here
	viaB = netip.AddrPortFrom(relayB, portB) // B sends here
	epA  = netip.AddrPortFrom(addrA, wgA)
	epB  = netip.AddrPortFrom(addrB, wgB)
)

// TestPaths relays between A and B in three namespaces through native XDP, generic
// XDP and the Go path, and checks that the counters of the path that should carry
// the traffic moved, and only those. The peers send with their veth's checksum
// offload on, so their UDP checksums are partial; the receivers verify what arrives.
func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		mode    xdprelay.Mode
		onXDP   bool
		wantMod xdprelay.Mode
	}{
		{xdprelay.ModeNative, true, xdprelay.ModeNative},
		{xdprelay.ModeGeneric, true, xdprelay.ModeGeneric},
		{xdprelay.ModeAuto, true, xdprelay.ModeNative},
		{xdprelay.ModeOff, false, ""},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			tp := newTopo(t, string(tc.mode[0]))
			if tc.mode != xdprelay.ModeGeneric && tc.mode != xdprelay.ModeOff {
				attachPass(t, tp.nsA, "a0")
				attachPass(t, tp.nsB, "b0")
			}
			sp := newSpec(7, portA, portB)
			r := newRelay(t, tp, tc.mode, sp)
			for _, a := range r.XDP() {
				if a.Mode != tc.wantMod {
					t.Errorf("attached to %s in %s mode, want %s", a.Interface, a.Mode, tc.wantMod)
				}
			}
			if got := len(r.XDP()); got != map[bool]int{true: 2, false: 0}[tc.onXDP] {
				t.Fatalf("attached to %d interfaces", got)
			}
			a, b := listen(t, tp.nsA, epA), listen(t, tp.nsB, epB)
			bind(t, a, viaA, sp, session.SideA, false)
			bind(t, b, viaB, sp, session.SideB, true)
			if tc.onXDP {
				eventually(t, "the session on XDP", func() bool { return r.Stats().OnXDP == 1 })
			}
			before := r.Stats()
			csumA, csumB := udpCsumErrors(t, tp.nsA), udpCsumErrors(t, tp.nsB)

			const n = 200
			exchange(t, a, b, viaA, viaB, n)
			exchange(t, b, a, viaB, viaA, n)

			// The Go path counts after its send returns: the packets may arrive first.
			eventually(t, "all packets counted", func() bool {
				st := r.Stats()
				return st.XDP.Packets+st.Go.Packets-before.XDP.Packets-before.Go.Packets >= 2*n
			})
			after := r.Stats()
			xdp, gop := after.XDP.Packets-before.XDP.Packets, after.Go.Packets-before.Go.Packets
			t.Logf("%s: xdp %d packets, go %d packets; XDP stats %v", tc.mode, xdp, gop, after.XDPStats)
			if tc.onXDP && (xdp != 2*n || gop != 0) {
				t.Errorf("XDP relayed %d and Go %d packets, want %d and 0", xdp, gop, 2*n)
			}
			if !tc.onXDP && (xdp != 0 || gop != 2*n) {
				t.Errorf("XDP relayed %d and Go %d packets, want 0 and %d", xdp, gop, 2*n)
			}
			if tc.onXDP && after.XDPStats[xdprelay.StatRedirectPackets]-before.XDPStats[xdprelay.StatRedirectPackets] != 2*n {
				t.Errorf("XDP redirected %d packets, want %d (A and B are behind different interfaces)",
					after.XDPStats[xdprelay.StatRedirectPackets]-before.XDPStats[xdprelay.StatRedirectPackets], 2*n)
			}
			if after.Drops != before.Drops {
				t.Errorf("drops changed: %v -> %v", before.Drops, after.Drops)
			}
			if d := udpCsumErrors(t, tp.nsA) - csumA + udpCsumErrors(t, tp.nsB) - csumB; d != 0 {
				t.Errorf("%d UDP checksum errors at the peers", d)
			}

			ss := r.Sessions()
			if len(ss) != 1 {
				t.Fatalf("Sessions() = %+v", ss)
			}
			s := ss[0]
			if s.Endpoints != [2]netip.AddrPort{epA, epB} || s.OnXDP != tc.onXDP {
				t.Errorf("status %+v", s)
			}
			path := s.Go
			if tc.onXDP {
				path = s.XDP
			}
			if path[0].Packets != n || path[1].Packets != n || path[0].Bytes == 0 {
				t.Errorf("per-session counters %+v, want %d packets each way", path, n)
			}
			if time.Since(s.LastSeen) > 5*time.Second {
				t.Errorf("last seen %v ago", time.Since(s.LastSeen))
			}
			checkMetrics(t, r, tc.onXDP, 2*n)
		})
	}
}

// checkMetrics gathers the collector and checks the packet counters of both paths.
func checkMetrics(t *testing.T, r *Relay, onXDP bool, n uint64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(r.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()+labels(m)] = value(m)
		}
	}
	wantXDP, wantGo := float64(n), 0.0
	if !onXDP {
		wantXDP, wantGo = 0, float64(n)
	}
	for k, want := range map[string]float64{
		`cvlan_relay_packets_total{path="xdp"}`:    wantXDP,
		`cvlan_relay_packets_total{path="go"}`:     wantGo,
		`cvlan_relay_sessions{state="active"}`:     1,
		`cvlan_relay_sessions{state="configured"}`: 1,
		`cvlan_relay_binds_total`:                  -1, // present
	} {
		v, ok := got[k]
		if !ok && !(k == `cvlan_relay_packets_total{path="xdp"}` && !onXDP) {
			t.Errorf("metric %s missing", k)
			continue
		}
		if want >= 0 && ok && v != want {
			t.Errorf("%s = %v, want %v", k, v, want)
		}
	}
}

func labels(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	s := "{"
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + `="` + l.GetValue() + `"`
	}
	return s + "}"
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// TestExpiryAndEviction checks that the session table stays the single source of
// truth: an entry the LRU evicts moves traffic to the Go path until the periodic
// check writes it again; an idle session is unbound (entries deleted, its traffic
// dropped) until both sides bind again; a side that moves gets new entries.
func TestExpiryAndEviction(t *testing.T) {
	tp := newTopo(t, "e")
	attachPass(t, tp.nsA, "a0")
	attachPass(t, tp.nsB, "b0")
	sp := newSpec(9, portA, portB)
	r := newRelay(t, tp, xdprelay.ModeNative, sp)
	a, b := listen(t, tp.nsA, epA), listen(t, tp.nsB, epB)
	bind(t, a, viaA, sp, session.SideA, false)
	bind(t, b, viaB, sp, session.SideB, true)
	eventually(t, "the session on XDP", func() bool { return r.Stats().OnXDP == 1 })
	exchange(t, a, b, viaA, viaB, 5)

	// Eviction: delete A's entry behind the relay's back.
	if _, ok, err := r.xdp.Delete(xdprelay.Key{Src: epA, Port: portA}); !ok || err != nil {
		t.Fatalf("deleting A's entry: %v %v", ok, err)
	}
	st := r.Stats()
	exchange(t, a, b, viaA, viaB, 5)
	exchange(t, b, a, viaB, viaA, 5)
	eventually(t, "the Go path's packets counted", func() bool { return r.Stats().Go.Packets-st.Go.Packets >= 5 })
	st2 := r.Stats()
	if st2.Go.Packets-st.Go.Packets != 5 || st2.XDP.Packets-st.XDP.Packets != 5 {
		t.Errorf("after eviction: go %d, xdp %d packets, want 5 and 5",
			st2.Go.Packets-st.Go.Packets, st2.XDP.Packets-st.XDP.Packets)
	}
	r.check(time.Now(), xdprelay.Monotonic())
	if r.Stats().OnXDP != 1 {
		t.Fatal("the check did not rewrite the evicted entry")
	}
	exchange(t, a, b, viaA, viaB, 5)
	if st3 := r.Stats(); st3.XDP.Packets-st2.XDP.Packets != 5 {
		t.Errorf("after the rewrite XDP relayed %d packets, want 5", st3.XDP.Packets-st2.XDP.Packets)
	}

	// A moves to another port: its entries follow, the old endpoint is refused.
	a2 := listen(t, tp.nsA, netip.AddrPortFrom(addrA, wgA+10))
	bind(t, a2, viaA, sp, session.SideA, true)
	exchange(t, b, a2, viaB, viaA, 3)
	exchange(t, a2, b, viaA, viaB, 3)
	if _, _, ok, _ := r.xdp.Lookup(xdprelay.Key{Src: epA, Port: portA}); ok {
		t.Error("the old endpoint's entry is still there")
	}
	drops := r.Stats().Drops[session.DropNotBound]
	if _, err := a.WriteToUDPAddrPort([]byte{4, 0, 0, 0, 1}, viaA); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the old endpoint's packet dropped", func() bool { return r.Stats().Drops[session.DropNotBound] == drops+1 })

	// Idle expiry.
	later := r.opts.IdleTimeout + time.Minute
	r.check(time.Now().Add(later), xdprelay.Monotonic()+later)
	st = r.Stats()
	if st.OnXDP != 0 || st.Active != 0 || st.Expired != 1 {
		t.Fatalf("after expiry: %+v", st)
	}
	if _, err := a2.WriteToUDPAddrPort([]byte{4, 0, 0, 0, 2}, viaA); err != nil {
		t.Fatal(err)
	}
	eventually(t, "traffic of an expired session dropped", func() bool { return r.Stats().Drops[session.DropNotBound] == drops+2 })
	bind(t, a2, viaA, sp, session.SideA, false)
	bind(t, b, viaB, sp, session.SideB, true)
	eventually(t, "the session back on XDP", func() bool { return r.Stats().OnXDP == 1 })
	exchange(t, a2, b, viaA, viaB, 3)

	// Removing the session deletes its entries and closes its ports.
	mustIn(t, tp.nsR, func() error { return r.Set(nil) })
	if _, _, ok, _ := r.xdp.Lookup(xdprelay.Key{Src: netip.AddrPortFrom(addrA, wgA+10), Port: portA}); ok {
		t.Error("a removed session's entry is still there")
	}
	if st := r.Stats(); st.Sessions != 0 || st.OnXDP != 0 {
		t.Errorf("after removal: %+v", st)
	}
}

// TestAutoFallsBack checks --xdp=auto: generic where native is impossible (lo has no
// driver XDP), the Go path alone where nothing attaches; native fails instead.
func TestAutoFallsBack(t *testing.T) {
	tp := newTopo(t, "f")
	var auto, none *Relay
	mustIn(t, tp.nsR, func() (err error) {
		if auto, err = New(Options{XDP: xdprelay.ModeAuto, Interfaces: []string{"lo"}}); err != nil {
			return err
		}
		if none, err = New(Options{XDP: xdprelay.ModeAuto, Interfaces: []string{"cvnosuch0"}}); err != nil {
			return err
		}
		if r, err := New(Options{XDP: xdprelay.ModeNative, Interfaces: []string{"lo"}}); err == nil {
			r.Close()
			t.Error("native mode on lo succeeded")
		}
		return nil
	})
	defer auto.Close()
	defer none.Close()
	if a := auto.XDP(); len(a) != 1 || a[0].Interface != "lo" || a[0].Mode != xdprelay.ModeGeneric {
		t.Errorf("auto on lo attached %+v, want generic on lo", a)
	}
	if a := none.XDP(); len(a) != 0 {
		t.Errorf("auto on a missing interface attached %+v", a)
	}
}
