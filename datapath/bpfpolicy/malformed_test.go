package bpfpolicy

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
)

func a4(s string) netip.Addr { return netip.MustParseAddr(s) }

// fragmentCases: a later fragment passes only after its first fragment passed.
func fragmentCases() []verdictCase {
	db, l := a4(db4), a4(local4)
	first := func(id uint16, dport uint16) []byte {
		return frame(ethIPv4, ipv4(db, l, protoUDP, id, 0, true, udp(3333, dport, 100)))
	}
	later := func(id uint16, more bool) []byte {
		return frame(ethIPv4, ipv4(db, l, protoUDP, id, 14, more, make([]byte, 50)))
	}
	db6, l6 := a4(db6), a4(local6)
	first6 := func(id uint32, dport uint16) []byte {
		return frame(ethIPv6, ipv6(db6, l6, v6Fragment, frag6(protoUDP, 0, true, id, udp(3333, dport, 100))))
	}
	later6 := func(id uint32) []byte {
		return frame(ethIPv6, ipv6(db6, l6, v6Fragment, frag6(protoUDP, 14, false, id, make([]byte, 40))))
	}
	return []verdictCase{
		{"v4/fragments of an accepted packet", []step{
			{in, first(99, 53), "pass:rule", ruleDNS},
			{in, later(99, true), "pass:fragment", ruleDNS},
			{in, later(99, false), "pass:fragment", ruleDNS},
			{in, later(100, false), "drop:fragment", 0},
		}},
		{"v4/fragments of a denied packet", []step{
			{in, first(101, 54), "drop:no_rule", 0},
			{in, later(101, false), "drop:fragment", 0},
		}},
		{"v4/later fragment first", []step{
			{in, later(102, false), "drop:fragment", 0},
			{in, first(102, 53), "pass:rule", ruleDNS},
		}},
		{"v4/fragments of a reply", []step{
			{out, ip(local4, db4, protoUDP, udp(40000, 5000, 10)), "pass:rule", ruleDBUDP},
			{in, frame(ethIPv4, ipv4(db, l, protoUDP, 7, 0, true, udp(5000, 40000, 100))), "pass:reply", 0},
			{in, frame(ethIPv4, ipv4(db, l, protoUDP, 7, 14, false, make([]byte, 50))), "pass:fragment", 0},
		}},
		{"v4/first fragment too short for its ports", []step{
			{in, frame(ethIPv4, ipv4(db, l, protoUDP, 5, 0, true, udp(3333, 53, 0)[:4])), "drop:malformed", 0},
		}},
		{"v6/fragments of an accepted packet", []step{
			{in, first6(7, 53), "pass:rule", ruleDNS},
			{in, later6(7), "pass:fragment", ruleDNS},
			{in, later6(8), "drop:fragment", 0},
		}},
		{"v6/fragments of a denied packet", []step{
			{in, first6(9, 54), "drop:no_rule", 0},
			{in, later6(9), "drop:fragment", 0},
		}},
		{"v6/atomic fragment is a whole packet", []step{
			{in, frame(ethIPv6, ipv6(db6, l6, v6Fragment, frag6(protoUDP, 0, false, 10, udp(3333, 53, 10)))), "pass:rule", ruleDNS},
			{in, later6(10), "drop:fragment", 0},
		}},
	}
}

func TestMalformed(t *testing.T) {
	e := loaded(t, testPolicy(), nil)
	web, l := a4(web4), a4(local4)
	web6, l6 := a4(web6), a4(local6)
	good4 := func(l4 []byte) []byte { return ipv4(web, l, protoTCP, 0, 0, false, l4) }
	set := func(b []byte, i int, v byte) []byte { b[i] = v; return b }
	setLen := func(b []byte, off int, v uint16) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
	tooManyExt := ext6(protoTCP, tcp(40000, 80, 0))
	for range 6 { // 7 destination options headers, one more than the programs skip
		tooManyExt = ext6(v6DestOpts, tooManyExt)
	}

	for _, tc := range []struct {
		name string
		pkt  []byte
		want string
	}{
		// A frame too short for its IP header cannot be fed to BPF_PROG_TEST_RUN (the
		// kernel refuses it); TestAttach and TestAttachTUN send such packets from the
		// wire.
		{"ipv4 ihl below 5", frame(ethIPv4, set(good4(tcp(40000, 80, 0)), 0, 0x44)), "drop:malformed"},
		{"ipv4 version 6", frame(ethIPv4, set(good4(tcp(40000, 80, 0)), 0, 0x65)), "drop:malformed"},
		{"ipv4 total length beyond the packet", frame(ethIPv4, setLen(good4(tcp(40000, 80, 0)), 2, 41)), "drop:malformed"},
		{"ipv4 total length below the header", frame(ethIPv4, setLen(good4(tcp(40000, 80, 0)), 2, 19)), "drop:malformed"},
		{"ipv4 options beyond the packet", frame(ethIPv4, set(good4(nil), 0, 0x46)), "drop:malformed"},
		{"tcp header cut", frame(ethIPv4, good4(tcp(40000, 80, 0)[:19])), "drop:malformed"},
		{"tcp data offset below 5", frame(ethIPv4, good4(set(tcp(40000, 80, 0), 12, 4<<4))), "drop:malformed"},
		{"tcp beyond the total length", frame(ethIPv4, append(setLen(good4(tcp(40000, 80, 0)), 2, 30), make([]byte, 0)...)), "drop:malformed"},
		{"udp header cut", frame(ethIPv4, ipv4(web, l, protoUDP, 0, 0, false, udp(40000, 53, 0)[:4])), "drop:malformed"},
		{"icmp header cut", frame(ethIPv4, ipv4(web, l, protoICMP, 0, 0, false, icmp(8, 0, 1, nil)[:4])), "drop:malformed"},
		{"ipv6 version 4", frame(ethIPv6, set(ipv6(web6, l6, protoTCP, tcp(40000, 80, 0)), 0, 0x40)), "drop:malformed"},
		{"ipv6 payload length beyond the packet", frame(ethIPv6, setLen(ipv6(web6, l6, protoTCP, tcp(40000, 80, 0)), 4, 21)), "drop:malformed"},
		{"ipv6 tcp header cut", frame(ethIPv6, ipv6(web6, l6, protoTCP, tcp(40000, 80, 0)[:12])), "drop:malformed"},
		{"ipv6 extension header cut", frame(ethIPv6, ipv6(web6, l6, v6HopByHop, []byte{protoTCP, 0, 1, 4})), "drop:malformed"},
		{"ipv6 extension header longer than the packet", frame(ethIPv6, ipv6(web6, l6, v6HopByHop, set(ext6(protoTCP, tcp(40000, 80, 0)), 1, 9))), "drop:malformed"},
		{"ipv6 too many extension headers", frame(ethIPv6, ipv6(web6, l6, v6DestOpts, tooManyExt)), "drop:malformed"},
		{"ipv6 fragment header cut", frame(ethIPv6, ipv6(web6, l6, v6Fragment, []byte{protoTCP, 0, 0, 1})), "drop:malformed"},

		{"ipv6 extension headers skipped", frame(ethIPv6, ipv6(web6, l6, v6HopByHop,
			ext6(v6Routing, ext6(v6DestOpts, ext6(protoTCP, tcp(40000, 80, 0)))))), "pass:rule"},
		{"ipv4 options skipped", frame(ethIPv4, func() []byte {
			b := ipv4(web, l, protoTCP, 0, 0, false, append(make([]byte, 4), tcp(40000, 80, 0)...))
			b[0] = 0x46
			return b
		}()), "pass:rule"},

		{"gre", frame(ethIPv4, ipv4(web, l, protoGRE, 0, 0, false, make([]byte, 8))), "drop:unsupported_proto"},
		{"icmpv6 in ipv4", frame(ethIPv4, ipv4(web, l, protoICMPv6, 0, 0, false, icmp(128, 0, 1, nil))), "drop:unsupported_proto"},
		{"icmp in ipv6", frame(ethIPv6, ipv6(web6, l6, protoICMP, icmp(8, 0, 1, nil))), "drop:unsupported_proto"},
		{"ipv6 no next header", frame(ethIPv6, ipv6(web6, l6, v6NoNext, nil)), "drop:unsupported_proto"},
		{"ipv6 esp", frame(ethIPv6, ipv6(web6, l6, 50, make([]byte, 16))), "drop:unsupported_proto"},
		{"lldp", frame(0x88cc, make([]byte, 40)), "drop:unsupported_l3"},
		{"arp on ethernet", frame(ethARP, make([]byte, 28)), "pass:l2"},
		{"neighbour solicitation on ethernet", frame(ethIPv6, ipv6(a4("fe80::1"), a4("ff02::1:ff00:1"), protoICMPv6, icmp(icmp6NeighborSolic, 0, 0, make([]byte, 16)))), "pass:l2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule := uint32(0)
			if tc.want == "pass:rule" {
				rule = ruleWeb
			}
			step{in, tc.pkt, tc.want, rule}.check(t, e)
		})
	}
}

// TestZeroPolicy: before the first Set, and after Set(nil), every IP packet drops.
func TestZeroPolicy(t *testing.T) {
	e := loaded(t, nil, nil)
	step{in, ip(web4, local4, protoTCP, tcp(1, 80, 0)), "drop:no_rule", 0}.check(t, e)
	step{out, ip(local6, db6, protoUDP, udp(1, 53, 0)), "drop:no_rule", 0}.check(t, e)
	if err := e.Set(testPolicy()); err != nil {
		t.Fatal(err)
	}
	step{in, ip(web4, local4, protoTCP, tcp(1, 80, 0)), "pass:rule", ruleWeb}.check(t, e)
	if err := e.Set(nil); err != nil {
		t.Fatal(err)
	}
	step{in, ip(web4, local4, protoTCP, tcp(2, 80, 0)), "drop:no_rule", 0}.check(t, e)
}

// TestConntrackExpiry: with a timeout of 0, a reply never finds its flow alive.
func TestConntrackExpiry(t *testing.T) {
	e := loaded(t, testPolicy(), func(s *ebpf.CollectionSpec) {
		for _, v := range []string{policyVarCtTimeoutTcpNs, policyVarCtTimeoutOtherNs} {
			if err := s.Variables[v].Set(uint64(0)); err != nil {
				t.Fatal(err)
			}
		}
	})
	step{out, ip(local4, db4, protoTCP, tcp(40001, 5432, 0)), "pass:rule", rulePostgres}.check(t, e)
	step{in, ip(db4, local4, protoTCP, tcp(5432, 40001, 0)), "drop:no_rule", 0}.check(t, e)
	// a new packet of the flow opens it again, even though the old entry is there
	step{out, ip(local4, db4, protoTCP, tcp(40001, 5432, 0)), "pass:rule", rulePostgres}.check(t, e)
}
