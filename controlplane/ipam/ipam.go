// Package ipam hands out overlay addresses from a network's prefixes. It is pure:
// callers pass the set of addresses in use and persist what it returns. It never
// hands out an IPv4 network or broadcast address.
package ipam

import (
	"math/big"
	"net/netip"
)

// Size is the number of assignable host addresses in an IPv4 prefix.
func Size(p netip.Prefix) int {
	n := 1 << (32 - p.Bits())
	if n <= 2 {
		return 0
	}
	return n - 2
}

// Allocate returns the first free IPv4 host address of p at or after hint (wrapping
// around), or false when every host address is in use. A hint outside p starts at
// the first host.
func Allocate(p netip.Prefix, inUse func(netip.Addr) bool, hint netip.Addr) (netip.Addr, bool) {
	size := Size(p)
	if size == 0 {
		return netip.Addr{}, false
	}
	start := 0
	if p.Contains(hint) {
		if off := Offset(p, hint); off >= 1 && off <= size {
			start = off - 1
		}
	}
	for i := 0; i < size; i++ {
		a := At(p, 1+(start+i)%size)
		if !inUse(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Offset is a's distance from p's first address.
func Offset(p netip.Prefix, a netip.Addr) int {
	x := new(big.Int).SetBytes(a.AsSlice())
	b := new(big.Int).SetBytes(p.Addr().AsSlice())
	return int(x.Sub(x, b).Int64())
}

// At returns the address off places after p's first address.
func At(p netip.Prefix, off int) netip.Addr {
	b := p.Addr().AsSlice()
	x := new(big.Int).SetBytes(b)
	x.Add(x, big.NewInt(int64(off)))
	out := make([]byte, len(b))
	x.FillBytes(out)
	a, _ := netip.AddrFromSlice(out)
	return a
}

// Pair returns the IPv6 address that mirrors v4 (same offset) in v6, or the zero
// address when v6 is unset.
func Pair(v4p netip.Prefix, v4 netip.Addr, v6p netip.Prefix) netip.Addr {
	if !v6p.IsValid() {
		return netip.Addr{}
	}
	return At(v6p, Offset(v4p, v4))
}
