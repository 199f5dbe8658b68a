package route

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/datapath/nl"
	"github.com/cvlan/cvlan/internal/privileged"
)

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestKernel runs Set against the real kernel in a network namespace of its own, on
// one end of a veth pair named like the overlay interface (this kernel has no dummy
// driver), and reads back through its own netlink handle what the kernel holds.
func TestKernel(t *testing.T) {
	privileged.Require(t)
	ns := fmt.Sprintf("cvlan-route-%d", os.Getpid())
	ip(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	ip(t, "-n", ns, "link", "add", "cvlan0", "type", "veth", "peer", "name", "cvlan0p")
	ip(t, "-n", ns, "link", "set", "cvlan0p", "up")

	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := nl.OpenAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	// The checks read the kernel through a handle of their own, not through nl.
	check, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(check.Close)

	r := New(h)
	apply := func(name string) {
		t.Helper()
		cfg := states[name]
		if err := r.Set(cfg); err != nil && !errors.Is(err, ErrNoChanges) {
			t.Fatalf("Set %s: %v", name, err)
		}
		if d := kernelDiff(t, check, cfg); d != "" {
			t.Fatalf("after Set %s: %s", name, d)
		}
		if err := r.Set(cfg); !errors.Is(err, ErrNoChanges) {
			t.Fatalf("second Set %s = %v, want ErrNoChanges", name, err)
		}
		// A new Router, as after a restart, finds nothing to do either.
		if err := New(h).Set(cfg); !errors.Is(err, ErrNoChanges) {
			t.Fatalf("Set %s by a new Router = %v, want ErrNoChanges", name, err)
		}
	}

	apply("dual")
	// A route through the link that is not ours must survive every Set. It is IPv6
	// because Linux itself flushes every IPv4 route of a link that loses its last IPv4
	// address, as "empty" and "v6 only" make it.
	ip(t, "-n", ns, "route", "add", "fd99::/64", "dev", "cvlan0", "proto", "static")
	for _, name := range []string{"v4", "renumbered", "v6 only", "two addresses", "empty", "dual"} {
		apply(name)
	}
	names := make([]string, 0, len(states))
	for n := range states {
		names = append(names, n)
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 10 {
		apply(names[rng.IntN(len(names))])
	}
	out, err := exec.Command("ip", "-n", ns, "-6", "route", "show", "fd99::/64").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "proto static") {
		t.Errorf("the foreign route is gone: %v %s", err, out)
	}
}

// kernelDiff returns how the kernel's cvlan0 differs from cfg, or "".
func kernelDiff(t *testing.T, h *netlink.Handle, cfg Config) string {
	t.Helper()
	link, err := h.LinkByName(cfg.Interface)
	if err != nil {
		t.Fatal(err)
	}
	var diffs []string
	if link.Attrs().Flags&net.FlagUp == 0 {
		diffs = append(diffs, "link is down")
	}
	if link.Attrs().MTU != cfg.MTU {
		diffs = append(diffs, fmt.Sprintf("mtu %d, want %d", link.Attrs().MTU, cfg.MTU))
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, a := range addrs {
		p, _ := prefixOf(a.IPNet)
		if p.Addr().IsLinkLocalUnicast() {
			continue
		}
		got = append(got, p.String())
		if a.Flags&unix.IFA_F_NOPREFIXROUTE == 0 {
			diffs = append(diffs, fmt.Sprintf("address %s lacks noprefixroute", p))
		}
		if p.Addr().Is6() && (a.Flags&unix.IFA_F_NODAD == 0 || a.Flags&unix.IFA_F_TENTATIVE != 0) {
			diffs = append(diffs, fmt.Sprintf("address %s has flags %#x, want nodad and not tentative", p, a.Flags))
		}
	}
	for _, p := range cfg.Addresses {
		want = append(want, p.String())
	}
	if g, w := sorted(got), sorted(want); g != w {
		diffs = append(diffs, fmt.Sprintf("addresses [%s], want [%s]", g, w))
	}

	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	got, want = nil, nil
	for _, rt := range routes {
		if rt.Protocol != Protocol {
			continue
		}
		dst, _ := prefixOf(rt.Dst)
		got = append(got, route{dst: dst, src: addrOf(rt.Src), gw: addrOf(rt.Gw), scope: uint8(rt.Scope)}.format(cfg.Interface))
	}
	for _, rt := range wantRoutes(cfg) {
		want = append(want, rt.format(cfg.Interface))
	}
	if g, w := sorted(got), sorted(want); g != w {
		diffs = append(diffs, fmt.Sprintf("routes [%s], want [%s]", g, w))
	}
	// Addresses never bring kernel prefix routes: every non-local route of ours is ours.
	for _, rt := range routes {
		dst, _ := prefixOf(rt.Dst)
		if rt.Protocol == unix.RTPROT_KERNEL && slices.ContainsFunc(cfg.Addresses, func(p netip.Prefix) bool {
			return p.Masked() == dst
		}) {
			diffs = append(diffs, fmt.Sprintf("kernel prefix route %s", dst))
		}
	}
	return strings.Join(diffs, "; ")
}
