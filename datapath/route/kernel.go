package route

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/datapath/nl"
)

// kernel is what Set reads and changes. Implementations: nlKernel (the real one) and,
// in tests, a fake that records a transcript.
type kernel interface {
	// link returns the state of dev; the error wraps nl.ErrNotFound if there is no dev.
	link(dev string) (linkState, error)
	// setLink sets the MTU of dev unless mtu is 0, then sets dev up if up is true.
	setLink(dev string, mtu int, up bool) error
	// addrs returns every address of dev, both families.
	addrs(dev string) ([]address, error)
	// addAddr adds a to dev.
	addAddr(dev string, a address) error
	// delAddr removes a from dev.
	delAddr(dev string, a address) error
	// routes returns the routes of the main table through dev that carry Protocol.
	routes(dev string) ([]route, error)
	// addRoute adds r through dev to the main table, marked with Protocol.
	addRoute(dev string, r route) error
	// delRoute deletes r, as returned by routes.
	delRoute(dev string, r route) error
}

// nlKernel is the kernel through rtnetlink.
type nlKernel struct{ h *nl.Handle }

var _ kernel = nlKernel{}

func (k nlKernel) link(dev string) (linkState, error) {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return linkState{}, err
	}
	a := l.Attrs()
	return linkState{mtu: a.MTU, up: a.Flags&net.FlagUp != 0}, nil
}

func (k nlKernel) setLink(dev string, mtu int, up bool) error {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return err
	}
	if mtu != 0 {
		if err := k.h.LinkSetMTU(l, mtu); err != nil {
			return err
		}
	}
	if up {
		return k.h.LinkSetUp(l)
	}
	return nil
}

func (k nlKernel) addrs(dev string) ([]address, error) {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return nil, err
	}
	as, err := k.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]address, 0, len(as))
	for _, a := range as {
		p, ok := prefixOf(a.IPNet)
		if !ok {
			return nil, fmt.Errorf("kernel returned unreadable address %v on %s", a.IPNet, dev)
		}
		out = append(out, address{prefix: p, flags: uint32(a.Flags)})
	}
	return out, nil
}

func (k nlKernel) addAddr(dev string, a address) error {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return err
	}
	return k.h.AddrAdd(l, &netlink.Addr{IPNet: ipNet(a.prefix), Flags: int(a.flags)})
}

func (k nlKernel) delAddr(dev string, a address) error {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return err
	}
	return k.h.AddrDel(l, &netlink.Addr{IPNet: ipNet(a.prefix)})
}

func (k nlKernel) routes(dev string) ([]route, error) {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return nil, err
	}
	filter := &netlink.Route{LinkIndex: l.Attrs().Index, Table: unix.RT_TABLE_MAIN, Protocol: Protocol}
	rs, err := k.h.RouteListFiltered(netlink.FAMILY_ALL, filter,
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	out := make([]route, 0, len(rs))
	for _, r := range rs {
		dst, ok := prefixOf(r.Dst)
		if !ok {
			return nil, fmt.Errorf("kernel returned unreadable route destination %v on %s", r.Dst, dev)
		}
		out = append(out, route{
			dst:    dst,
			src:    addrOf(r.Src),
			gw:     addrOf(r.Gw),
			scope:  uint8(r.Scope),
			metric: r.Priority,
		})
	}
	return out, nil
}

func (k nlKernel) addRoute(dev string, r route) error {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return err
	}
	return k.h.RouteAdd(k.nlRoute(l, r))
}

func (k nlKernel) delRoute(dev string, r route) error {
	l, err := k.h.LinkByName(dev)
	if err != nil {
		return err
	}
	return k.h.RouteDel(k.nlRoute(l, r))
}

func (nlKernel) nlRoute(l netlink.Link, r route) *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       ipNet(r.dst),
		Scope:     netlink.Scope(r.scope),
		Protocol:  Protocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
		Priority:  r.metric,
	}
	if r.src.IsValid() {
		nr.Src = r.src.AsSlice()
	}
	if r.gw.IsValid() {
		nr.Gw = r.gw.AsSlice()
	}
	return nr
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	a = a.Unmap()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}
