package xdprelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// MaxUDPLen is the longest UDP datagram, header included, that the program relays;
// longer ones pass to the stack and the Go path. It is MAX_UDP_LEN in bpf/relay.c.
const MaxUDPLen = 3072

// Key selects one direction of a session: packets from Src to the relay's Port.
type Key struct {
	Src  netip.AddrPort // the sending side's learned endpoint
	Port uint16         // the session port it sends to
}

func (k Key) String() string { return fmt.Sprintf("%s->:%d", k.Src, k.Port) }

// Rewrite is what the program does to a packet that matches a Key.
type Rewrite struct {
	Src     netip.AddrPort // new source: the relay address the other side uses, and its session port
	Dst     netip.AddrPort // new destination: the other side's learned endpoint
	Ifindex int            // egress interface; the program uses XDP_TX when it is the ingress one
	SrcMAC  [6]byte        // new Ethernet source
	DstMAC  [6]byte        // new Ethernet destination
}

// Counters are what the program relayed for one Key.
type Counters struct {
	Packets  uint64
	Bytes    uint64        // UDP payload bytes
	LastSeen time.Duration // CLOCK_MONOTONIC_COARSE of the last packet ([Monotonic]); 0 if none
}

// Path is the reverse path of a bind packet, as the program recorded it.
type Path struct {
	Local    netip.Addr // the relay address the bind was sent to
	Ifindex  int        // the interface it came in on
	PeerMAC  [6]byte    // the frame's source: the next hop toward the sender
	LocalMAC [6]byte    // the frame's destination: the relay's MAC on Ifindex
}

// Monotonic returns CLOCK_MONOTONIC_COARSE, the clock of [Counters.LastSeen] (the
// program reads it with bpf_ktime_get_coarse_ns, which is cheaper than the precise
// clock and precise enough, to a scheduler tick, for idle expiry).
func Monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		panic(fmt.Sprintf("xdprelay: clock_gettime(CLOCK_MONOTONIC_COARSE): %v", err))
	}
	return time.Duration(ts.Nano())
}

// be16 converts a port between host order and the big-endian bytes the program
// reads from a native-endian uint16 field (it is its own inverse).
func be16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func addr16(a netip.Addr) [16]byte { return a.Unmap().As16() }

func fromAddr16(b [16]byte) netip.Addr { return netip.AddrFrom16(b).Unmap() }

func (k Key) raw() relaySessionKey {
	return relaySessionKey{Addr: addr16(k.Src.Addr()), Sport: be16(k.Src.Port()), Dport: be16(k.Port)}
}

// Put writes the entry for k, with zero counters. Only IPv4 rewrites are relayed by
// the program; Put refuses others.
func (p *Program) Put(k Key, r Rewrite) error {
	if !r.Src.Addr().Unmap().Is4() || !r.Dst.Addr().Unmap().Is4() || !k.Src.Addr().Unmap().Is4() {
		return fmt.Errorf("writing XDP entry %s: only IPv4 is relayed in XDP, not %s to %s", k, r.Src, r.Dst)
	}
	if r.Ifindex <= 0 {
		return fmt.Errorf("writing XDP entry %s: no egress interface", k)
	}
	v := relaySessionValue{
		Saddr:   addr16(r.Src.Addr()),
		Daddr:   addr16(r.Dst.Addr()),
		Sport:   be16(r.Src.Port()),
		Dport:   be16(r.Dst.Port()),
		Ifindex: uint32(r.Ifindex),
		Smac:    r.SrcMAC,
		Dmac:    r.DstMAC,
	}
	if err := p.objs.Sessions.Put(k.raw(), &v); err != nil {
		return fmt.Errorf("writing XDP entry %s: %w", k, err)
	}
	return nil
}

// Lookup returns the entry for k, if there is one.
func (p *Program) Lookup(k Key) (Rewrite, Counters, bool, error) {
	var v relaySessionValue
	if err := p.objs.Sessions.Lookup(k.raw(), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Rewrite{}, Counters{}, false, nil
		}
		return Rewrite{}, Counters{}, false, fmt.Errorf("reading XDP entry %s: %w", k, err)
	}
	r, c := fromValue(&v)
	return r, c, true, nil
}

func fromValue(v *relaySessionValue) (Rewrite, Counters) {
	return Rewrite{
			Src:     netip.AddrPortFrom(fromAddr16(v.Saddr), be16(v.Sport)),
			Dst:     netip.AddrPortFrom(fromAddr16(v.Daddr), be16(v.Dport)),
			Ifindex: int(v.Ifindex),
			SrcMAC:  v.Smac,
			DstMAC:  v.Dmac,
		}, Counters{
			Packets:  v.Packets,
			Bytes:    v.Bytes,
			LastSeen: time.Duration(v.LastSeen),
		}
}

// Delete removes the entry for k and returns its last counters; a missing entry is
// not an error (ok is false).
func (p *Program) Delete(k Key) (c Counters, ok bool, err error) {
	var v relaySessionValue
	if err := p.objs.Sessions.LookupAndDelete(k.raw(), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Counters{}, false, nil
		}
		return Counters{}, false, fmt.Errorf("deleting XDP entry %s: %w", k, err)
	}
	_, c = fromValue(&v)
	return c, true, nil
}

// Path returns the path of the last bind packet the program saw for k.
func (p *Program) Path(k Key) (Path, bool, error) {
	var v relayBindPath
	if err := p.objs.BindPaths.Lookup(k.raw(), &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Path{}, false, nil
		}
		return Path{}, false, fmt.Errorf("reading the bind path of %s: %w", k, err)
	}
	return Path{Local: fromAddr16(v.Local), Ifindex: int(v.Ifindex), PeerMAC: v.PeerMac, LocalMAC: v.LocalMac}, true, nil
}

// HardwareAddr returns a MAC as a net.HardwareAddr, for printing.
func HardwareAddr(mac [6]byte) net.HardwareAddr { return net.HardwareAddr(mac[:]) }

// Stat indexes [Stats]; the values are the program's enum stat.
type Stat int

// The program's global counters.
const (
	StatTXPackets       = Stat(relayStatSTAT_TX_PACKETS)
	StatTXBytes         = Stat(relayStatSTAT_TX_BYTES)
	StatRedirectPackets = Stat(relayStatSTAT_REDIRECT_PACKETS)
	StatRedirectBytes   = Stat(relayStatSTAT_REDIRECT_BYTES)
	StatPassOther       = Stat(relayStatSTAT_PASS_OTHER)
	StatPassMalformed   = Stat(relayStatSTAT_PASS_MALFORMED)
	StatPassBind        = Stat(relayStatSTAT_PASS_BIND)
	StatPassNoSession   = Stat(relayStatSTAT_PASS_NO_SESSION)
	StatPassTooBig      = Stat(relayStatSTAT_PASS_TOO_BIG)
	NumStats            = int(relayStatSTAT_MAX)
)

var statNames = [...]string{
	StatTXPackets:       "tx_packets",
	StatTXBytes:         "tx_bytes",
	StatRedirectPackets: "redirect_packets",
	StatRedirectBytes:   "redirect_bytes",
	StatPassOther:       "pass_other",
	StatPassMalformed:   "pass_malformed",
	StatPassBind:        "pass_bind",
	StatPassNoSession:   "pass_no_session",
	StatPassTooBig:      "pass_too_big",
}

func (s Stat) String() string {
	if s >= 0 && int(s) < len(statNames) {
		return statNames[s]
	}
	return fmt.Sprintf("stat(%d)", int(s))
}

// Stats are the program's global counters, summed over CPUs.
type Stats [NumStats]uint64

// Packets returns the packets the program relayed (XDP_TX and redirect).
func (s *Stats) Packets() uint64 { return s[StatTXPackets] + s[StatRedirectPackets] }

// Bytes returns the UDP payload bytes the program relayed.
func (s *Stats) Bytes() uint64 { return s[StatTXBytes] + s[StatRedirectBytes] }

// Stats reads the program's global counters.
func (p *Program) Stats() (Stats, error) {
	var out Stats
	for i := range out {
		var perCPU []uint64
		if err := p.objs.Stats.Lookup(uint32(i), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("reading XDP counter %s: %w", Stat(i), err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}
