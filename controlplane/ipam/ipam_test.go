package ipam

import (
	"net/netip"
	"testing"
)

func TestAllocateReclaim(t *testing.T) {
	p := netip.MustParsePrefix("100.64.0.0/29") // 6 hosts: .1-.6
	used := map[netip.Addr]bool{}
	inUse := func(a netip.Addr) bool { return used[a] }
	var hint netip.Addr
	var got []netip.Addr
	for {
		a, ok := Allocate(p, inUse, hint)
		if !ok {
			break
		}
		if used[a] {
			t.Fatalf("handed out %s twice", a)
		}
		used[a] = true
		hint = a.Next()
		got = append(got, a)
	}
	if len(got) != 6 || got[0] != netip.MustParseAddr("100.64.0.1") || got[5] != netip.MustParseAddr("100.64.0.6") {
		t.Fatalf("allocated %v, want .1 to .6", got)
	}
	delete(used, netip.MustParseAddr("100.64.0.3"))
	a, ok := Allocate(p, inUse, hint)
	if !ok || a != netip.MustParseAddr("100.64.0.3") {
		t.Fatalf("after freeing .3 got %v %v", a, ok)
	}
}

func TestPair(t *testing.T) {
	v4p := netip.MustParsePrefix("100.64.1.0/24")
	v6p := netip.MustParsePrefix("fd7a:115c::/64")
	if got := Pair(v4p, netip.MustParseAddr("100.64.1.42"), v6p); got != netip.MustParseAddr("fd7a:115c::2a") {
		t.Fatalf("Pair = %s", got)
	}
	if Size(netip.MustParsePrefix("10.0.0.0/31")) != 0 {
		t.Fatal("a /31 has no assignable hosts here")
	}
}
