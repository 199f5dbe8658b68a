package route

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/datapath/nl"
)

// fakeKernel is an in-memory kernel that checks what a real one checks and writes
// every change as an `ip`-like line to its transcript.
type fakeKernel struct {
	links      map[string]*fakeLink
	transcript []string
}

type fakeLink struct {
	mtu    int
	up     bool
	addrs  []address
	routes []fakeRoute
}

type fakeRoute struct {
	route
	proto int
}

var _ kernel = (*fakeKernel)(nil)

func newFakeKernel() *fakeKernel { return &fakeKernel{links: map[string]*fakeLink{}} }

// addLink adds a link the way the kernel shows a fresh TUN: down, MTU 1500, with an
// IPv6 link-local address and a kernel route for it (both not cvlan's).
func (f *fakeKernel) addLink(dev string) *fakeLink {
	l := &fakeLink{
		mtu:   1500,
		addrs: []address{{prefix: netip.MustParsePrefix("fe80::1/64")}},
		routes: []fakeRoute{{
			route: route{dst: netip.MustParsePrefix("fe80::/64"), metric: 256},
			proto: unix.RTPROT_KERNEL,
		}},
	}
	f.links[dev] = l
	return l
}

func (f *fakeKernel) log(format string, args ...any) {
	f.transcript = append(f.transcript, fmt.Sprintf(format, args...))
}

func (f *fakeKernel) get(dev string) (*fakeLink, error) {
	l := f.links[dev]
	if l == nil {
		return nil, fmt.Errorf("link %s: %w", dev, nl.ErrNotFound)
	}
	return l, nil
}

func (f *fakeKernel) link(dev string) (linkState, error) {
	l, err := f.get(dev)
	if err != nil {
		return linkState{}, err
	}
	return linkState{mtu: l.mtu, up: l.up}, nil
}

func (f *fakeKernel) setLink(dev string, mtu int, up bool) error {
	l, err := f.get(dev)
	if err != nil {
		return err
	}
	line := "link set " + dev
	if mtu != 0 {
		l.mtu = mtu
		line += fmt.Sprintf(" mtu %d", mtu)
	}
	if up {
		l.up = true
		line += " up"
	}
	f.log("%s", line)
	return nil
}

func (f *fakeKernel) addrs(dev string) ([]address, error) {
	l, err := f.get(dev)
	if err != nil {
		return nil, err
	}
	return slices.Clone(l.addrs), nil
}

func (f *fakeKernel) addAddr(dev string, a address) error {
	l, err := f.get(dev)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(l.addrs, func(h address) bool { return h.prefix == a.prefix }) {
		return unix.EEXIST
	}
	l.addrs = append(l.addrs, a)
	f.log("addr add %s", a.format(dev))
	return nil
}

// delAddr removes a; like Linux, it deletes the IPv4 routes that used it as preferred
// source (all IPv4 routes of the link if it was the last IPv4 address) and clears it
// from IPv6 routes.
func (f *fakeKernel) delAddr(dev string, a address) error {
	l, err := f.get(dev)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(l.addrs, func(h address) bool { return h.prefix == a.prefix })
	if i < 0 {
		return unix.EADDRNOTAVAIL
	}
	l.addrs = slices.Delete(l.addrs, i, i+1)
	f.log("addr del %s dev %s", a.prefix, dev)
	ip := a.prefix.Addr()
	lastV4 := ip.Is4() && !slices.ContainsFunc(l.addrs, func(h address) bool { return h.prefix.Addr().Is4() })
	l.routes = slices.DeleteFunc(l.routes, func(r fakeRoute) bool {
		return ip.Is4() && r.dst.Addr().Is4() && (r.src == ip || lastV4)
	})
	for i := range l.routes {
		if l.routes[i].src == ip {
			l.routes[i].src = netip.Addr{}
		}
	}
	return nil
}

func (f *fakeKernel) routes(dev string) ([]route, error) {
	l, err := f.get(dev)
	if err != nil {
		return nil, err
	}
	var out []route
	for _, r := range l.routes {
		if r.proto == Protocol {
			out = append(out, r.route)
		}
	}
	return out, nil
}

// addRoute checks like Linux that the link is up, the source is an address of the
// link and the route does not exist yet.
func (f *fakeKernel) addRoute(dev string, r route) error {
	l, err := f.get(dev)
	if err != nil {
		return err
	}
	if !l.up {
		return fmt.Errorf("device for nexthop is not up: %w", unix.ENETDOWN)
	}
	if r.src.IsValid() && !slices.ContainsFunc(l.addrs, func(a address) bool { return a.prefix.Addr() == r.src }) {
		return fmt.Errorf("invalid prefsrc %s: %w", r.src, unix.EINVAL)
	}
	if slices.ContainsFunc(l.routes, func(h fakeRoute) bool { return h.dst == r.dst && h.metric == r.metric }) {
		return unix.EEXIST
	}
	l.routes = append(l.routes, fakeRoute{route: r, proto: Protocol})
	f.log("route add %s", r.format(dev))
	return nil
}

func (f *fakeKernel) delRoute(dev string, r route) error {
	l, err := f.get(dev)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(l.routes, func(h fakeRoute) bool { return h.route == r && h.proto == Protocol })
	if i < 0 {
		return unix.ESRCH
	}
	l.routes = slices.Delete(l.routes, i, i+1)
	f.log("route del %s", r.format(dev))
	return nil
}

// check returns how the state of cfg.Interface differs from cfg, or "".
func (f *fakeKernel) check(cfg Config) string {
	l := f.links[cfg.Interface]
	if l == nil {
		return "no link " + cfg.Interface
	}
	var diffs []string
	if !l.up {
		diffs = append(diffs, "link is down")
	}
	if cfg.MTU != 0 && l.mtu != cfg.MTU {
		diffs = append(diffs, fmt.Sprintf("mtu %d, want %d", l.mtu, cfg.MTU))
	}
	var got, want []string
	for _, a := range l.addrs {
		if !a.kernelOwned() {
			got = append(got, a.prefix.String())
		}
	}
	for _, p := range cfg.Addresses {
		want = append(want, p.String())
	}
	if g, w := sorted(got), sorted(want); g != w {
		diffs = append(diffs, fmt.Sprintf("addresses [%s], want [%s]", g, w))
	}
	got, want = nil, nil
	for _, r := range l.routes {
		if r.proto == Protocol {
			got = append(got, r.key().format(cfg.Interface))
		}
	}
	for _, r := range wantRoutes(cfg) {
		want = append(want, r.format(cfg.Interface))
	}
	if g, w := sorted(got), sorted(want); g != w {
		diffs = append(diffs, fmt.Sprintf("routes [%s], want [%s]", g, w))
	}
	if !slices.ContainsFunc(l.routes, func(r fakeRoute) bool { return r.proto == unix.RTPROT_KERNEL }) {
		diffs = append(diffs, "the kernel's own route is gone")
	}
	if !slices.ContainsFunc(l.addrs, address.kernelOwned) {
		diffs = append(diffs, "the link-local address is gone")
	}
	return strings.Join(diffs, "; ")
}

func sorted(s []string) string {
	slices.Sort(s)
	return strings.Join(s, ", ")
}
