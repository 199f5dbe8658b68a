package xdprelay

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/internal/privileged"
)

// XDP verdicts.
const (
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// xdpMd is struct xdp_md, the context of an XDP test run.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

const loIfindex = 1 // the test run's ingress interface: lo of the test's namespace

func load(t testing.TB) *Program {
	t.Helper()
	privileged.Require(t)
	if err := features.HaveProgramType(ebpf.XDP); errors.Is(err, ebpf.ErrNotSupported) && !privileged.Required() {
		t.Skipf("the kernel has no XDP: %v", err)
	} else if err != nil {
		t.Fatalf("probing for XDP: %v", err)
	}
	p, err := Load(Options{MaxEntries: 1024})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// run runs the program once on pkt arriving on lo and returns the verdict and frame.
func run(t testing.TB, p *Program, pkt []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(pkt)+512)
	opts := &ebpf.RunOptions{Data: pkt, DataOut: out, Context: &xdpMd{DataEnd: uint32(len(pkt)), IngressIfindex: loIfindex}}
	ret, err := p.objs.RelayXdp.Run(opts)
	if err != nil {
		t.Fatalf("running the program: %v", err)
	}
	return ret, opts.DataOut
}

var (
	macPeerA  = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macRelay  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macRelay2 = [6]byte{0x02, 0, 0, 0, 0, 0x02}
	macPeerB  = [6]byte{0x02, 0, 0, 0, 0, 0x0b}

	relayA = netip.MustParseAddrPort("198.51.100.1:40001") // the relay as A sees it, port A
	relayB = netip.MustParseAddrPort("203.0.113.1:40002")  // the relay as B sees it, port B
	peerA  = netip.MustParseAddrPort("192.0.2.10:51820")
	peerB  = netip.MustParseAddrPort("192.0.2.77:1234")
)

// sessionEntries writes both directions of a session: A on lo (XDP_TX back out of
// it), B behind interface 4242 (a redirect).
func sessionEntries(t *testing.T, p *Program) {
	t.Helper()
	must(t, p.Put(Key{Src: peerA, Port: relayA.Port()}, Rewrite{
		Src: relayB, Dst: peerB, Ifindex: 4242, SrcMAC: macRelay2, DstMAC: macPeerB,
	}))
	must(t, p.Put(Key{Src: peerB, Port: relayB.Port()}, Rewrite{
		Src: relayA, Dst: peerA, Ifindex: loIfindex, SrcMAC: macRelay, DstMAC: macPeerA,
	}))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// payloadOf returns n bytes that are not a bind packet (a WireGuard data message
// header, then a pattern).
func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	if n >= 4 {
		copy(b, []byte{4, 0, 0, 0})
	}
	return b
}

func TestRelayRewrite(t *testing.T) {
	p := load(t)
	sessionEntries(t, p)
	// Lengths cover every tier of the checksum loops: 256-, 64- and 4-byte blocks, a
	// trailing 2 and 1 bytes, and the largest datagram the program takes.
	lengths := []int{0, 1, 2, 3, 5, 32, 55, 56, 63, 64, 65, 148, 255, 256, 257, 319, 1000, 1400, 1452, 1472, 2000, MaxUDPLen - 8}
	for _, dir := range []struct {
		name           string
		src, to        netip.AddrPort
		srcMAC, dstMAC [6]byte
		wantSrc        netip.AddrPort
		wantDst        netip.AddrPort
		wantSMAC       [6]byte
		wantDMAC       [6]byte
		wantVerdict    uint32
	}{
		{"a-to-b", peerA, relayA, macPeerA, macRelay, relayB, peerB, macRelay2, macPeerB, xdpRedirect},
		{"b-to-a", peerB, relayB, macPeerB, macRelay2, relayA, peerA, macRelay, macPeerA, xdpTX},
	} {
		for _, n := range lengths {
			for _, mode := range []csumMode{csumFull, csumPartial, csumZero} {
				t.Run(fmt.Sprintf("%s/len=%d/csum=%d", dir.name, n, mode), func(t *testing.T) {
					in := frame{
						dstMAC: dir.dstMAC, srcMAC: dir.srcMAC, tos: 0xb8, id: 0x1234, flags: 0x4000, ttl: 3,
						src: dir.src, dst: dir.to, payload: payloadOf(n), csum: mode,
					}
					verdict, out := run(t, p, in.bytes())
					if verdict != dir.wantVerdict {
						t.Fatalf("verdict %d, want %d", verdict, dir.wantVerdict)
					}
					got, err := parse(out)
					if err != nil {
						t.Fatal(err)
					}
					if len(out) != len(in.bytes()) {
						t.Errorf("frame length %d, want %d", len(out), len(in.bytes()))
					}
					for _, c := range []struct {
						field     string
						got, want any
					}{
						{"eth dst", got.dstMAC, dir.wantDMAC},
						{"eth src", got.srcMAC, dir.wantSMAC},
						{"ethertype", got.ethType, uint16(0x0800)},
						{"version/ihl", got.verIHL, uint8(0x45)},
						{"tos", got.tos, in.tos},
						{"total length", got.totLen, uint16(28 + n)},
						{"id", got.id, in.id},
						{"flags/offset", got.flags, in.flags},
						{"ttl", got.ttl, uint8(64)},
						{"protocol", got.proto, uint8(17)},
						{"source", got.src, dir.wantSrc},
						{"destination", got.dst, dir.wantDst},
						{"udp length", got.udpLen, uint16(8 + n)},
					} {
						if c.got != c.want {
							t.Errorf("%s = %v, want %v", c.field, c.got, c.want)
						}
					}
					if !bytes.Equal(got.payload, in.payload) {
						t.Error("payload changed")
					}
					if err := checksumsOK(out); err != nil {
						t.Error(err)
					}
				})
			}
		}
	}
}

func TestRelayPass(t *testing.T) {
	p := load(t)
	sessionEntries(t, p)
	base := frame{dstMAC: macRelay, srcMAC: macPeerA, ttl: 64, src: peerA, dst: relayA, payload: payloadOf(100)}
	bind := session.Message{Type: session.TypeBind, Side: session.SideA, Session: 7, Counter: 1}.Append(nil, &session.Token{1})
	with := func(f func(*frame)) []byte { fr := base; f(&fr); return fr.bytes() }
	for _, tc := range []struct {
		name string
		pkt  []byte
		stat Stat
	}{
		{"unknown source port", with(func(f *frame) { f.src = netip.AddrPortFrom(peerA.Addr(), 9) }), StatPassNoSession},
		{"unknown source address", with(func(f *frame) { f.src = netip.MustParseAddrPort("192.0.2.11:51820") }), StatPassNoSession},
		{"other destination port", with(func(f *frame) { f.dst = netip.AddrPortFrom(relayA.Addr(), 53) }), StatPassNoSession},
		{"bind from a bound source", with(func(f *frame) { f.payload = bind }), StatPassBind},
		{"bind prefix only", with(func(f *frame) { f.payload = []byte(session.Magic) }), StatPassBind},
		{"too big", with(func(f *frame) { f.payload = payloadOf(MaxUDPLen - 7) }), StatPassTooBig},
		{"fragment", with(func(f *frame) { f.flags = 0x2000 }), StatPassOther},
		{"not IPv4", with(func(f *frame) { f.ethType = 0x86dd }), StatPassOther},
		{"IP options", func() []byte { b := base.bytes(); b[14] = 0x46; return b }(), StatPassOther},
		{"not UDP", func() []byte { b := base.bytes(); b[14+9] = 6; return b }(), StatPassOther},
		{"short frame", base.bytes()[:20], StatPassOther},
		{"truncated UDP header", base.bytes()[:14+20+4], StatPassMalformed},
		{"trailing padding", append(base.bytes(), 0, 0), StatPassMalformed},
		{"UDP length too short", func() []byte { b := base.bytes(); b[34+5]--; return b }(), StatPassMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := p.Stats()
			must(t, err)
			verdict, out := run(t, p, tc.pkt)
			if verdict != xdpPass {
				t.Fatalf("verdict %d, want XDP_PASS", verdict)
			}
			if !bytes.Equal(out, tc.pkt) {
				t.Error("a passed packet was modified")
			}
			after, err := p.Stats()
			must(t, err)
			for s := range NumStats {
				want := before[s]
				if Stat(s) == tc.stat {
					want++
				}
				if after[s] != want {
					t.Errorf("stat %s = %d, want %d", Stat(s), after[s], want)
				}
			}
		})
	}
	// A bind recorded its reverse path.
	path, ok, err := p.Path(Key{Src: peerA, Port: relayA.Port()})
	if err != nil || !ok {
		t.Fatalf("no bind path recorded: %v", err)
	}
	if want := (Path{Local: relayA.Addr(), Ifindex: loIfindex, PeerMAC: macPeerA, LocalMAC: macRelay}); path != want {
		t.Errorf("bind path = %+v, want %+v", path, want)
	}
	if _, ok, _ := p.Path(Key{Src: peerB, Port: relayB.Port()}); ok {
		t.Error("a bind path for a source that sent no bind")
	}
}

func TestCounters(t *testing.T) {
	p := load(t)
	sessionEntries(t, p)
	keyA := Key{Src: peerA, Port: relayA.Port()}
	start := Monotonic()
	for _, n := range []int{10, 20, 30} {
		run(t, p, frame{src: peerA, dst: relayA, payload: payloadOf(n)}.bytes())
	}
	run(t, p, frame{src: peerB, dst: relayB, payload: payloadOf(5)}.bytes())
	r, c, ok, err := p.Lookup(keyA)
	if err != nil || !ok {
		t.Fatalf("Lookup: %v %v", ok, err)
	}
	if r.Dst != peerB || r.Src != relayB || r.Ifindex != 4242 {
		t.Errorf("rewrite read back as %+v", r)
	}
	if c.Packets != 3 || c.Bytes != 60 || c.LastSeen < start || c.LastSeen > Monotonic() {
		t.Errorf("counters of A's direction = %+v, want 3 packets, 60 bytes, last seen after %v", c, start)
	}
	st, err := p.Stats()
	must(t, err)
	if st[StatRedirectPackets] != 3 || st[StatRedirectBytes] != 60 || st[StatTXPackets] != 1 || st[StatTXBytes] != 5 ||
		st.Packets() != 4 || st.Bytes() != 65 {
		t.Errorf("stats = %v", st)
	}
	// Delete returns the final counters; a second Delete finds nothing.
	c, ok, err = p.Delete(keyA)
	if err != nil || !ok || c.Packets != 3 {
		t.Errorf("Delete = %+v %v %v", c, ok, err)
	}
	if _, ok, err := p.Delete(keyA); ok || err != nil {
		t.Errorf("second Delete = %v %v", ok, err)
	}
	if v, _ := run(t, p, frame{src: peerA, dst: relayA, payload: payloadOf(10)}.bytes()); v != xdpPass {
		t.Errorf("verdict after Delete = %d, want XDP_PASS", v)
	}
	// Put resets the counters.
	sessionEntries(t, p)
	if _, c, _, _ := p.Lookup(Key{Src: peerB, Port: relayB.Port()}); c != (Counters{}) {
		t.Errorf("counters after Put = %+v, want zero", c)
	}
	if err := p.Put(keyA, Rewrite{Src: relayB, Dst: netip.MustParseAddrPort("[2001:db8::1]:1"), Ifindex: 1}); err == nil {
		t.Error("Put accepted an IPv6 destination")
	}
	if err := p.Put(keyA, Rewrite{Src: relayB, Dst: peerB}); err == nil {
		t.Error("Put accepted a rewrite without an egress interface")
	}
}

// TestCAgreesWithGo checks what C and Go must agree on: the stat enum, the bind magic
// and the largest relayed datagram.
func TestCAgreesWithGo(t *testing.T) {
	if len(statNames) != NumStats {
		t.Errorf("statNames has %d names, the program %d counters (STAT_MAX)", len(statNames), NumStats)
	}
	for s, n := range statNames {
		if n == "" {
			t.Errorf("stat %d has no name", s)
		}
	}
	p := load(t)
	sessionEntries(t, p)
	spec, err := loadRelay()
	must(t, err)
	if got := spec.Maps[relayMapStats].MaxEntries; int(got) != NumStats {
		t.Errorf("stats map has %d entries, want %d", got, NumStats)
	}
	// Bytes that differ from the magic in any one position are data, not binds.
	for i := range len(session.Magic) {
		b := []byte(session.Magic + "....")
		b[i]++
		v, _ := run(t, p, frame{src: peerA, dst: relayA, payload: b}.bytes())
		if v == xdpPass {
			t.Errorf("payload %q passed as a bind", b)
		}
	}
	for _, n := range []int{MaxUDPLen - 8, MaxUDPLen - 7} {
		v, _ := run(t, p, frame{src: peerA, dst: relayA, payload: payloadOf(n)}.bytes())
		if relayed := v != xdpPass; relayed != (8+n <= MaxUDPLen) {
			t.Errorf("a %d-byte datagram: verdict %d (MaxUDPLen %d)", 8+n, v, MaxUDPLen)
		}
	}
}

func TestModeParse(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "native": ModeNative, "generic": ModeGeneric, "off": ModeOff} {
		var m Mode
		if err := m.Set(in); err != nil || m != want {
			t.Errorf("Set(%q) = %v, %v", in, m, err)
		}
	}
	if _, err := ParseMode("driver"); err == nil {
		t.Error("ParseMode accepted driver")
	}
}

// BenchmarkProgram times one run of the program on a relayed packet (prog.Run's own
// loop, no attachment): the XDP path's CPU cost per packet.
func BenchmarkProgram(b *testing.B) {
	p := load(b)
	// Benchmark reruns the program on its own output: this rewrite maps the packet to
	// itself (with a fresh checksum each time), so every run takes the relayed path.
	must(b, p.Put(Key{Src: peerA, Port: relayA.Port()}, Rewrite{Src: peerA, Dst: relayA, Ifindex: loIfindex}))
	for _, n := range []int{32, 148, 1452} {
		b.Run(fmt.Sprintf("payload=%d", n), func(b *testing.B) {
			pkt := frame{src: peerA, dst: relayA, payload: payloadOf(n), csum: csumPartial}.bytes()
			ret, per, err := p.objs.RelayXdp.Benchmark(pkt, b.N, nil)
			must(b, err)
			if ret != xdpTX {
				b.Fatalf("verdict %d", ret)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
			b.ReportMetric(0, "ns/op")
		})
	}
}
