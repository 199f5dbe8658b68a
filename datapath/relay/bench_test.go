package relay

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// BenchmarkXDPvsGo measures the relay's throughput on the XDP path and on the Go
// path, side by side on the same three namespaces. Peer A is a packet generator: an
// XDP program run in live-frame mode (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES)
// transmits b.N copies of one WireGuard-sized datagram out of a0 as fast as the
// kernel can. Peer B counts what arrives with an XDP program on b0 that drops it, so
// neither the sender nor the receiver is a userspace socket and the relay is the
// bottleneck. One op is one generated datagram; the metrics are:
//
//	pkts/s       datagrams delivered to B per second (first sent to last delivered)
//	sent-pkts/s  datagrams the generator sent per second
//	delivered-%  delivered / sent (the rest the relay could not take)
//	cpu-ns/pkt   busy CPU time of the whole machine (all cores, /proc/stat) per
//	             delivered datagram: generator, relay and sink together
//	xdp/go       (on the go path) the XDP path's pkts/s over the Go path's
//
// The "none" path drops the generator's frames at the relay's ingress: its cpu-ns/pkt
// (per datagram sent) is the generator's and the veth's share, to subtract from the
// others.
func BenchmarkXDPvsGo(b *testing.B) {
	tp := newTopo(b, "bench")
	env := newBenchEnv(b, tp)
	results := map[string]float64{}
	for _, path := range []string{"xdp", "go", "none"} {
		b.Run("path="+path, func(b *testing.B) {
			stop := env.setup(b, path)
			defer stop()
			pps := env.run(b)
			results[path] = pps
			if path == "go" && pps > 0 && results["xdp"] > 0 {
				b.ReportMetric(results["xdp"]/pps, "xdp/go")
			}
		})
	}
}

type benchEnv struct {
	tp       *topo
	counts   *ebpf.Map     // per-CPU count of datagrams that reached b0
	sink     *ebpf.Program // b0: count and drop
	pass     *ebpf.Program // XDP_PASS, so that ra accepts redirected frames on the Go path
	drop     *ebpf.Program // XDP_DROP at ra, for the "none" path
	gen      *ebpf.Program // XDP_TX, run in live-frame mode on a0
	a0       int           // a0's ifindex (in nsA)
	frame    []byte
	specSeq  session.ID
	a0MAC    net.HardwareAddr
	raMAC    net.HardwareAddr
	payloadN int
}

func newBenchEnv(b *testing.B, tp *topo) *benchEnv {
	env := &benchEnv{tp: tp, payloadN: 148} // a WireGuard transport message carrying a 100-byte packet
	var err error
	env.counts, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		b.Fatalf("creating the sink's counter: %v", err)
	}
	b.Cleanup(func() { env.counts.Close() })
	env.sink = xdpProg(b, asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, env.counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("out"), // XDP_DROP
		asm.Return(),
	})
	env.pass = xdpProg(b, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()})
	env.drop = xdpProg(b, asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()})
	mustIn(b, tp.nsA, func() error {
		ifi, err := net.InterfaceByName("a0")
		if err != nil {
			return err
		}
		env.a0, env.a0MAC = ifi.Index, ifi.HardwareAddr
		return nil
	})
	mustIn(b, tp.nsR, func() error {
		ra, err := net.InterfaceByName("ra")
		if err != nil {
			return err
		}
		env.raMAC = ra.HardwareAddr
		return nil
	})
	// Static neighbours: the sink drops B's ARP replies too.
	var b0MAC net.HardwareAddr
	mustIn(b, tp.nsB, func() error {
		ifi, err := net.InterfaceByName("b0")
		if err != nil {
			return err
		}
		b0MAC = ifi.HardwareAddr
		return nil
	})
	ip(b, "-n", tp.nsR, "neigh", "replace", addrA.String(), "lladdr", env.a0MAC.String(), "dev", "ra", "nud", "permanent")
	ip(b, "-n", tp.nsR, "neigh", "replace", addrB.String(), "lladdr", b0MAC.String(), "dev", "rb", "nud", "permanent")
	// The generator's peer end needs an XDP program for its XDP_TX to leave a0.
	attachPass(b, tp.nsA, "a0")
	env.frame = udpFrame(env.raMAC, env.a0MAC, epA, viaA, env.payloadN)
	env.gen = xdpProg(b, generator(env.frame))
	return env
}

// generator returns a program that writes frame's Ethernet, IPv4 and UDP headers
// into the packet and returns XDP_TX. Live-frame mode recycles pages without
// re-initialising them, and the relay rewrote the headers on the way out, so every
// run must restore them; the payload is never changed.
func generator(frame []byte) asm.Instructions {
	const hdr = 14 + 20 + 8
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // xdp_md->data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // xdp_md->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, hdr),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
	}
	for off := 0; off+4 <= hdr; off += 4 {
		v := int32(binary.LittleEndian.Uint32(frame[off:]))
		insns = append(insns, asm.StoreImm(asm.R2, int16(off), int64(v), asm.Word))
	}
	insns = append(insns,
		asm.StoreImm(asm.R2, hdr-2, int64(binary.LittleEndian.Uint16(frame[hdr-2:])), asm.Half),
		asm.Mov.Imm(asm.R0, 3).WithSymbol("out"), // XDP_TX
		asm.Return(),
	)
	return insns
}

func xdpProg(b *testing.B, insns asm.Instructions) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL", Instructions: insns})
	if err != nil {
		b.Fatalf("loading an XDP program: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// attach attaches p to iface in ns in native mode until the returned func is called.
func attach(b *testing.B, ns, iface string, p *ebpf.Program) func() {
	var l link.Link
	mustIn(b, ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		l, err = link.AttachXDP(link.XDPOptions{Program: p, Interface: ifi.Index, Flags: link.XDPDriverMode})
		return err
	})
	return func() { l.Close() }
}

// setup starts the relay for path, binds both sides and attaches the sink.
func (env *benchEnv) setup(b *testing.B, path string) (stop func()) {
	var undo []func()
	stop = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if path == "none" {
		undo = append(undo, attach(b, env.tp.nsR, "ra", env.drop))
		undo = append(undo, attach(b, env.tp.nsB, "b0", env.sink))
		return stop
	}
	mode := xdprelay.ModeNative
	if path == "go" {
		mode = xdprelay.ModeOff
		undo = append(undo, attach(b, env.tp.nsR, "ra", env.pass))
	}
	env.specSeq++
	sp := newSpec(env.specSeq, portA, portB)
	var r *Relay
	mustIn(b, env.tp.nsR, func() (err error) {
		r, err = New(Options{XDP: mode, Interfaces: []string{"ra", "rb"}, CheckInterval: time.Hour})
		if err != nil {
			return err
		}
		return r.Set([]session.Spec{sp})
	})
	undo = append(undo, func() { r.Close() })
	func() {
		ca, cb := listen(b, env.tp.nsA, epA), listen(b, env.tp.nsB, epB)
		defer ca.Close()
		defer cb.Close()
		bind(b, ca, viaA, sp, session.SideA, false)
		bind(b, cb, viaB, sp, session.SideB, true)
	}()
	if path == "xdp" && r.Stats().OnXDP != 1 {
		b.Fatalf("session not on XDP: %+v", r.Stats())
	}
	undo = append(undo, attach(b, env.tp.nsB, "b0", env.sink))
	return stop
}

func (env *benchEnv) delivered(b *testing.B) uint64 {
	var per []uint64
	if err := env.counts.Lookup(uint32(0), &per); err != nil {
		b.Fatalf("reading the sink's counter: %v", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// xdpMd is struct xdp_md, the live-frame run's context.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// run generates b.N datagrams and waits until deliveries stop; it returns pkts/s.
func (env *benchEnv) run(b *testing.B) float64 {
	before := env.delivered(b)
	cpu0 := busyCPU(b)
	b.ResetTimer()
	start := time.Now()
	mustIn(b, env.tp.nsA, func() error {
		_, err := env.gen.Run(&ebpf.RunOptions{
			Data:      env.frame,
			Repeat:    uint32(b.N),
			Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			Context:   &xdpMd{DataEnd: uint32(len(env.frame)), IngressIfindex: uint32(env.a0)},
			BatchSize: 64,
		})
		if err != nil {
			return fmt.Errorf("generating in live-frame mode: %w", err)
		}
		return nil
	})
	genTime := time.Since(start)
	// Deliveries may trail the generator (the Go path drains its socket buffers):
	// poll until the count has not moved for 100ms.
	last, lastAt := env.delivered(b), time.Now()
	for time.Since(lastAt) < 100*time.Millisecond {
		time.Sleep(time.Millisecond) // polling interval, not synchronization
		if n := env.delivered(b); n != last {
			last, lastAt = n, time.Now()
		}
	}
	b.StopTimer()
	elapsed := lastAt.Sub(start)
	cpu := busyCPU(b) - cpu0 // the idle tail adds (almost) nothing
	n := last - before
	b.ReportMetric(float64(b.N)/genTime.Seconds(), "sent-pkts/s")
	b.ReportMetric(100*float64(n)/float64(b.N), "delivered-%")
	if n == 0 { // the "none" path: the generator's cost per datagram sent
		b.ReportMetric(0, "pkts/s")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/pkt")
		return 0
	}
	pps := float64(n) / elapsed.Seconds()
	b.ReportMetric(pps, "pkts/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/pkt")
	return pps
}

// busyCPU returns the machine's busy CPU time so far, summed over cores.
func busyCPU(b *testing.B) time.Duration {
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("parsing /proc/stat: %v", err)
		}
		busy += n
	}
	return time.Duration(busy) * (time.Second / 100) // USER_HZ
}

// udpFrame builds an Ethernet/IPv4/UDP frame with correct checksums.
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst netip.AddrPort, payloadN int) []byte {
	udpLen := 8 + payloadN
	f := make([]byte, 14+20+udpLen)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^sum16(0, ip))
	u := f[34:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], []byte{4, 0, 0, 0})
	for i := 12; i < udpLen; i++ {
		u[i] = byte(i)
	}
	pseudo := uint32(binary.BigEndian.Uint16(s[:2])) + uint32(binary.BigEndian.Uint16(s[2:])) +
		uint32(binary.BigEndian.Uint16(d[:2])) + uint32(binary.BigEndian.Uint16(d[2:])) + 17 + uint32(udpLen)
	c := ^sum16(pseudo, u)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return f
}

func sum16(sum uint32, b []byte) uint16 {
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}
