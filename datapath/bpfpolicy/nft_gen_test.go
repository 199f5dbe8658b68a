package bpfpolicy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/policy"
)

// Helpers of BenchmarkPolicyVsNftables: the policy, its nftables translation, the
// frames and the two small BPF programs that generate and count them.

const (
	nftBenchIdentities = 250  // identities, 4 prefixes and 4 rule entries each
	nftBenchPort       = 7000 // the UDP port every identity may reach
	nftBenchDenyPort   = 6000 // a UDP port no identity may reach
	nftBenchFrames     = 256  // distinct frames the generator cycles through (a power of 2)
	nftBenchHdr        = 44   // bytes of each frame the generator rewrites: Ethernet, IPv4, UDP, 2 of payload
	nftBenchPayload    = 18   // UDP payload: 60-byte frames, the Ethernet minimum
	nftBenchTable      = "cvlanbench"
	nftBenchRecvAddr   = "10.99.0.2"
	nftBenchSendAddr   = "10.99.0.1"
	nftBenchWorldFirst = 200 // world (no identity) sources are 10.200.x.y
)

// nftBenchPolicy is the receiver's policy: identity i (1..250) has the prefixes
// 10.1.i.0/24, 10.3.i.0/24, 10.2.i.1/32 and 10.2.i.2/32 (disjoint, so longest-prefix
// identity and "any covering prefix" agree, and a flat nftables map is exact) and
// four ingress accept entries: a UDP range below 5200, a UDP range that covers
// nftBenchPort, and two TCP ranges. 1000 rule entries, 1000 prefixes, IPv4 only.
func nftBenchPolicy() *policy.NodePolicy {
	p := &policy.NodePolicy{Version: 1, RuleNames: map[uint32]string{}}
	add := func(id policy.Identity, proto uint8, lo, hi int) {
		r := uint32(len(p.Rules) + 1)
		p.Rules = append(p.Rules, policy.RuleEntry{Direction: policy.Ingress, Identity: id, Proto: proto,
			PortLo: uint16(lo), PortHi: uint16(hi), Verdict: policy.Accept, RuleID: r})
		p.RuleNames[r] = fmt.Sprint("bench-", r)
	}
	for i := 1; i <= nftBenchIdentities; i++ {
		id := policy.Identity(i)
		for _, pfx := range []string{"10.1.%d.0/24", "10.3.%d.0/24", "10.2.%d.1/32", "10.2.%d.2/32"} {
			p.Prefixes = append(p.Prefixes, policy.IdentityPrefix{Prefix: netip.MustParsePrefix(fmt.Sprintf(pfx, i)), Identity: id})
		}
		lo := 1000 + i*131%4000
		add(id, protoUDP, lo, lo+50+i%100)
		add(id, protoUDP, 6900+i%50, 7100+i%50)
		lo = 20 + i*61%1000
		add(id, protoTCP, lo, lo+i%100)
		lo = 8000 + i*17%1000
		add(id, protoTCP, lo, lo+200+i%300)
	}
	return p
}

// nftBenchRuleset translates p's ingress entries into an inet table in the
// receiver's namespace, for the interface iface: a prefix → identity verdict map (the
// eBPF identity tries) that jumps to one chain per identity holding one counted rule
// per entry (the eBPF rule groups and per-rule counters), in a prerouting chain
// after conntrack, with established and related packets accepted first (the eBPF
// conntrack's replies and related ICMP errors), IPv6 neighbour discovery accepted
// (the eBPF "l2" pass) and a counted drop for everything else (the eBPF drop
// counters). The output chain mirrors the egress program for a policy with no egress
// entries: only replies and neighbour discovery leave through iface. Only traffic of
// iface is judged, as only iface carries the programs.
func nftBenchRuleset(p *policy.NodePolicy, iface string) string {
	var b strings.Builder
	protoName := map[uint8]string{protoTCP: "tcp", protoUDP: "udp"}
	byID := map[policy.Identity][]policy.RuleEntry{}
	var ids []policy.Identity
	for _, r := range p.Rules {
		if r.Direction != policy.Ingress {
			continue
		}
		if _, ok := byID[r.Identity]; !ok {
			ids = append(ids, r.Identity)
		}
		byID[r.Identity] = append(byID[r.Identity], r)
	}
	fmt.Fprintf(&b, "table inet %s {\n", nftBenchTable)
	for _, id := range ids {
		fmt.Fprintf(&b, "\tchain id%d {\n", id)
		for _, r := range byID[id] {
			verdict := map[policy.Verdict]string{policy.Accept: "accept", policy.Deny: "drop"}[r.Verdict]
			fmt.Fprintf(&b, "\t\t%s dport %d-%d counter %s comment \"rule %d\"\n", protoName[r.Proto], r.PortLo, r.PortHi, verdict, r.RuleID)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("\tmap ident4 {\n\t\ttype ipv4_addr : verdict\n\t\tflags interval\n\t\telements = {\n")
	for _, ip := range p.Prefixes {
		if _, ok := byID[ip.Identity]; ok && ip.Prefix.Addr().Is4() {
			fmt.Fprintf(&b, "\t\t\t%s : jump id%d,\n", ip.Prefix, ip.Identity)
		}
	}
	b.WriteString("\t\t}\n\t}\n")
	fmt.Fprintf(&b, `	chain pre {
		type filter hook prerouting priority filter; policy accept;
		iif != %[1]q accept
		ct state established,related counter accept
		ip saddr vmap @ident4
		meta nfproto ipv6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
		counter drop
	}
	chain out {
		type filter hook output priority filter; policy accept;
		oif != %[1]q accept
		ct state established,related accept
		meta nfproto ipv6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
		drop
	}
}
`, iface)
	return b.String()
}

// nftCounted sums the packets counted by the rules of the table's chains other than
// out, from `nft -j list table`: every packet the prerouting chain judged, since
// each ends on exactly one counted rule.
func nftCounted(listing string) (uint64, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Chain string            `json:"chain"`
				Expr  []json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(listing), &doc); err != nil {
		return 0, fmt.Errorf("parsing nft's listing: %w", err)
	}
	var n uint64
	var rules int
	for _, o := range doc.Nftables {
		if o.Rule == nil || o.Rule.Chain == "out" {
			continue
		}
		for _, raw := range o.Rule.Expr {
			var e struct {
				Counter *struct{ Packets uint64 } `json:"counter"`
			}
			if json.Unmarshal(raw, &e) == nil && e.Counter != nil {
				n += e.Counter.Packets
				rules++
			}
		}
	}
	if rules == 0 {
		return 0, fmt.Errorf("no counters in nft's listing")
	}
	return n, nil
}

// nftBenchFrame is an Ethernet, IPv4, UDP frame from src:sport to the receiver's
// dport, with a correct IPv4 checksum and no UDP checksum (0, allowed in IPv4), so
// that the stack takes it as it is.
func nftBenchFrame(dstMAC, srcMAC net.HardwareAddr, src netip.Addr, sport, dport uint16) []byte {
	u := udp(sport, dport, nftBenchPayload)
	f := frame(ethIPv4, ipv4(src, netip.MustParseAddr(nftBenchRecvAddr), protoUDP, sport, 0, false, u))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	return f
}

// nftBenchMix returns the frames of one mix: every 16th frame is of the rare
// kind, accepted in the drop-heavy mix and dropped in the pass-heavy one. Accepted
// frames come from an address of a random identity to nftBenchPort; dropped ones
// alternate between a world source (no identity) to nftBenchPort and an identity's
// source to nftBenchDenyPort, which its ranges do not cover. accepts is how many
// frames p accepts, by the naive evaluator.
func nftBenchMix(b testing.TB, p *policy.NodePolicy, dstMAC, srcMAC net.HardwareAddr, dropHeavy bool) (frames [][]byte, accepts int) {
	b.Helper()
	for i := range nftBenchFrames {
		accept := (i%16 == 0) == dropHeavy
		id := 1 + i*97%nftBenchIdentities
		var src netip.Addr
		switch i % 4 {
		case 0:
			src = netip.AddrFrom4([4]byte{10, 1, byte(id), byte(1 + i%250)})
		case 1:
			src = netip.AddrFrom4([4]byte{10, 2, byte(id), byte(1 + i%2)})
		default:
			src = netip.AddrFrom4([4]byte{10, 3, byte(id), byte(1 + i%250)})
		}
		dport := uint16(nftBenchPort)
		if !accept {
			if i%2 == 0 {
				src = netip.AddrFrom4([4]byte{10, nftBenchWorldFirst, byte(i), byte(1 + i%250)})
			} else {
				dport = nftBenchDenyPort
			}
		}
		sport := uint16(20000 + i)
		_, ok := p.Lookup(policy.Ingress, src, protoUDP, dport)
		if ok != accept {
			b.Fatalf("frame %d from %v to port %d: accepted %v by the policy, want %v", i, src, dport, ok, accept)
		}
		if ok {
			accepts++
		}
		frames = append(frames, nftBenchFrame(dstMAC, srcMAC, src, sport, dport))
	}
	return frames, accepts
}

// nftGenerator returns an XDP program for live-frame runs that writes the first
// nftBenchHdr bytes of frame number seq % nftBenchFrames from frames into the packet,
// increments seq and returns XDP_TX: one run cycles through every frame. Live-frame
// runs recycle their pages without re-initialising them, so each run writes the
// whole header; the frames differ only there.
func nftGenerator(frames, seq *ebpf.Map) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, seq.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.DWord),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Add.Imm(asm.R8, 1),
		asm.StoreMem(asm.R0, 0, asm.R8, asm.DWord),
		asm.And.Imm(asm.R7, nftBenchFrames-1),
		asm.StoreMem(asm.RFP, -8, asm.R7, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.LoadMapPtr(asm.R1, frames.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.Word), // xdp_md->data
		asm.LoadMem(asm.R3, asm.R6, 4, asm.Word), // xdp_md->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, nftBenchHdr),
		asm.JGT.Reg(asm.R4, asm.R3, "drop"),
	}
	for off := int16(0); off < nftBenchHdr; off += 4 {
		insns = append(insns, asm.LoadMem(asm.R5, asm.R0, off, asm.Word), asm.StoreMem(asm.R2, off, asm.R5, asm.Word))
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 3), // XDP_TX
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("drop"), // XDP_DROP
		asm.Return(),
	)
}

// nftCounter returns a program that counts every packet in slot 0 of the per-CPU
// array counts and returns ret: as a socket filter with ret 0 it counts the datagrams
// delivered through the whole stack to its socket and discards them, so that no
// userspace reader limits the rate; as a TC program with TC_ACT_SHOT it is the
// cheapest possible drop.
func nftCounter(counts *ebpf.Map, ret int32) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, ret).WithSymbol("out"),
		asm.Return(),
	}
}

// nftCountingSocket binds a UDP socket to port on every address of the calling
// thread's namespace and attaches prog to it; the caller closes the descriptor.
func nftCountingSocket(port int, prog *ebpf.Program) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("udp socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog.FD()); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("attaching the counting filter: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding port %d: %w", port, err)
	}
	return fd, nil
}

// sumPerCPU reads slot 0 of a per-CPU array of uint64 and sums it.
func sumPerCPU(m *ebpf.Map) (uint64, error) {
	var vals []uint64
	if err := m.Lookup(uint32(0), &vals); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range vals {
		n += v
	}
	return n, nil
}

// nftHdrValue returns the generator's map value for frame f: its first nftBenchHdr bytes.
func nftHdrValue(f []byte) []byte {
	v := make([]byte, nftBenchHdr)
	copy(v, f)
	return v
}
