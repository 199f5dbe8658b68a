package bpfpolicy

import (
	"encoding/binary"
	"net/netip"
)

// Packet builders for the prog.Run tests. Every builder returns bytes as they would
// be on the wire; frame adds the Ethernet header BPF_PROG_TEST_RUN needs.

const (
	ethIPv4 = 0x0800
	ethIPv6 = 0x86dd
	ethARP  = 0x0806

	protoTCP    = 6
	protoUDP    = 17
	protoICMP   = 1
	protoICMPv6 = 58
	protoGRE    = 47

	v6HopByHop = 0
	v6Routing  = 43
	v6Fragment = 44
	v6DestOpts = 60
	v6NoNext   = 59
)

// frame puts an Ethernet header with ethertype in front of payload.
func frame(ethertype uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 0xbb})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 0xaa})
	binary.BigEndian.PutUint16(b[12:], ethertype)
	return append(b, payload...)
}

// ip frames an IPv4 or IPv6 packet, by the family of src.
func ip(src, dst string, proto uint8, l4 []byte) []byte {
	s := netip.MustParseAddr(src)
	if s.Is4() {
		return frame(ethIPv4, ipv4(s, netip.MustParseAddr(dst), proto, 0, 0, false, l4))
	}
	return frame(ethIPv6, ipv6(s, netip.MustParseAddr(dst), proto, l4))
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4 builds an IPv4 header and payload; fragOff is in units of 8 bytes.
func ipv4(src, dst netip.Addr, proto uint8, id uint16, fragOff uint16, more bool, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(20+len(payload)))
	binary.BigEndian.PutUint16(b[4:], id)
	fo := fragOff & 0x1fff
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], fo)
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	return append(b, payload...)
}

// ipv6 builds an IPv6 header whose next header is nh; payload may start with
// extension headers.
func ipv6(src, dst netip.Addr, nh uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = nh
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

// ext6 is an 8-byte hop-by-hop, routing or destination options header (padding only).
func ext6(next uint8, rest []byte) []byte {
	b := []byte{next, 0, 1, 4, 0, 0, 0, 0} // PadN option of 4 bytes
	return append(b, rest...)
}

// frag6 is an IPv6 fragment header; off is in units of 8 bytes.
func frag6(next uint8, off uint16, more bool, id uint32, rest []byte) []byte {
	b := make([]byte, 8, 8+len(rest))
	b[0] = next
	fo := off << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], id)
	return append(b, rest...)
}

// tcp is a TCP header (SYN) with payload; checksums are not checked by the programs.
func tcp(sport, dport uint16, payload int) []byte {
	b := make([]byte, 20+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = 0x02
	binary.BigEndian.PutUint16(b[14:], 65535)
	return b
}

func udp(sport, dport uint16, payload int) []byte {
	b := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+payload))
	return b
}

// ICMP types used by the tests.
const (
	icmpEchoReply      = 0
	icmpUnreachable    = 3
	icmpEchoRequest    = 8
	icmp6Unreachable   = 1
	icmp6EchoRequest   = 128
	icmp6EchoReply     = 129
	icmp6NeighborSolic = 135
)

// icmp is an ICMP(v6) message: type, code, checksum, 4 bytes (echo: id, sequence),
// then body.
func icmp(typ, code uint8, id uint16, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], 1)
	return append(b, body...)
}

// icmpError is an ICMP(v6) error (unreachable) quoting the IP packet orig (without
// its Ethernet header), cut to its IP header and 8 bytes of transport header.
func icmpError(v6 bool, orig []byte) []byte {
	orig = orig[14:]
	hl := 20
	typ := uint8(icmpUnreachable)
	if v6 {
		hl = 40
		typ = icmp6Unreachable
	}
	quote := orig[:min(len(orig), hl+8)]
	return icmp(typ, 3, 0, quote)
}
