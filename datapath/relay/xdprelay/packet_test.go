package xdprelay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// This file builds and parses test frames and checks checksums with its own RFC 1071
// sum, independent of the program under test.

// csumMode says what the UDP checksum field of a crafted packet holds.
type csumMode int

const (
	csumFull    csumMode = iota // a complete checksum, as a NIC or the stack emits it
	csumPartial                 // only the folded pseudo-header sum (CHECKSUM_PARTIAL on veth)
	csumZero                    // 0: no checksum (allowed for UDP over IPv4)
)

type frame struct {
	dstMAC, srcMAC [6]byte
	ethType        uint16
	tos            uint8
	id             uint16
	flags          uint16 // flags and fragment offset
	ttl            uint8
	src, dst       netip.AddrPort
	payload        []byte
	csum           csumMode
}

// rfc1071 is the Internet checksum's one's complement sum of b, folded, not inverted.
func rfc1071(initial uint32, b []byte) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// pseudo returns the unfolded sum of the IPv4 UDP pseudo-header.
func pseudo(src, dst netip.Addr, udpLen int) uint32 {
	s, d := src.As4(), dst.As4()
	word := func(hi, lo byte) uint32 { return uint32(hi)<<8 + uint32(lo) }
	return word(s[0], s[1]) + word(s[2], s[3]) + word(d[0], d[1]) + word(d[2], d[3]) + 17 + uint32(udpLen)
}

func (f frame) bytes() []byte {
	udpLen := 8 + len(f.payload)
	b := make([]byte, 14+20+udpLen)
	copy(b[0:6], f.dstMAC[:])
	copy(b[6:12], f.srcMAC[:])
	et := f.ethType
	if et == 0 {
		et = 0x0800
	}
	binary.BigEndian.PutUint16(b[12:], et)
	ip := b[14:34]
	ip[0] = 0x45
	ip[1] = f.tos
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	binary.BigEndian.PutUint16(ip[4:], f.id)
	binary.BigEndian.PutUint16(ip[6:], f.flags)
	ip[8] = f.ttl
	ip[9] = 17
	s, d := f.src.Addr().As4(), f.dst.Addr().As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^rfc1071(0, ip))
	u := b[34:]
	binary.BigEndian.PutUint16(u[0:], f.src.Port())
	binary.BigEndian.PutUint16(u[2:], f.dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], f.payload)
	switch f.csum {
	case csumFull:
		c := ^rfc1071(pseudo(f.src.Addr(), f.dst.Addr(), udpLen), u)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(u[6:], c)
	case csumPartial:
		binary.BigEndian.PutUint16(u[6:], rfc1071(pseudo(f.src.Addr(), f.dst.Addr(), udpLen), nil))
	}
	return b
}

// parsed is a frame's fields as read back from bytes.
type parsed struct {
	dstMAC, srcMAC [6]byte
	ethType        uint16
	verIHL, tos    uint8
	totLen, id     uint16
	flags          uint16
	ttl, proto     uint8
	ipCsum         uint16
	src, dst       netip.AddrPort
	udpLen, udpCs  uint16
	payload        []byte
}

func parse(b []byte) (parsed, error) {
	if len(b) < 42 {
		return parsed{}, fmt.Errorf("frame of %d bytes", len(b))
	}
	var p parsed
	copy(p.dstMAC[:], b[0:6])
	copy(p.srcMAC[:], b[6:12])
	p.ethType = binary.BigEndian.Uint16(b[12:])
	ip := b[14:34]
	p.verIHL, p.tos = ip[0], ip[1]
	p.totLen = binary.BigEndian.Uint16(ip[2:])
	p.id = binary.BigEndian.Uint16(ip[4:])
	p.flags = binary.BigEndian.Uint16(ip[6:])
	p.ttl, p.proto = ip[8], ip[9]
	p.ipCsum = binary.BigEndian.Uint16(ip[10:])
	u := b[34:]
	p.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(u[0:]))
	p.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(u[2:]))
	p.udpLen = binary.BigEndian.Uint16(u[4:])
	p.udpCs = binary.BigEndian.Uint16(u[6:])
	p.payload = u[8:]
	return p, nil
}

// checksumsOK verifies b's IPv4 header checksum and its UDP checksum over the
// pseudo-header, header and payload, the way a receiver does.
func checksumsOK(b []byte) error {
	ip := b[14:34]
	if s := rfc1071(0, ip); s != 0xffff {
		return fmt.Errorf("IPv4 header sums to %#04x, want 0xffff", s)
	}
	p, err := parse(b)
	if err != nil {
		return err
	}
	u := b[34:]
	if int(p.udpLen) != len(u) {
		return fmt.Errorf("UDP length %d, %d bytes present", p.udpLen, len(u))
	}
	if p.udpCs == 0 {
		return fmt.Errorf("UDP checksum is 0 (none); the relay must always compute one")
	}
	if s := rfc1071(pseudo(p.src.Addr(), p.dst.Addr(), len(u)), u); s != 0xffff {
		return fmt.Errorf("UDP sums to %#04x, want 0xffff", s)
	}
	return nil
}
