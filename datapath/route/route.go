package route

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/datapath/nl"
)

// Protocol is the rtnetlink protocol number (rtm_protocol) that marks the routes
// cvlan owns. 0xc7 (199) is not assigned in linux/rtnetlink.h nor in iproute2's
// rt_protos; a packaged node may name it with /etc/iproute2/rt_protos.d/cvlan.conf
// ("199 cvlan") so that `ip route` prints "proto cvlan".
const Protocol = 0xc7

// ErrNoChanges is returned by Set when the kernel already held the desired state.
var ErrNoChanges = errors.New("route: no changes")

// Config is the whole desired state of one interface.
type Config struct {
	// Interface is the name of the link, which must exist.
	Interface string
	// MTU is set on the link; 0 leaves the link's MTU alone.
	MTU int
	// Addresses are exactly the addresses the link holds, both families; host
	// prefixes (100.64.0.2/32, fd00::2/128) are typical. IPv6 link-local addresses
	// the kernel adds are left alone.
	Addresses []netip.Prefix
	// Routes are exactly the routes of the main table through the link that carry
	// Protocol: scope link, with as preferred source the first address in Addresses
	// of the same family, if there is one.
	Routes []netip.Prefix
}

// Validate reports the first thing the kernel could not hold as asked.
func (c Config) Validate() error {
	if c.Interface == "" || len(c.Interface) > unix.IFNAMSIZ-1 || strings.ContainsAny(c.Interface, "/ \t\n") {
		return fmt.Errorf("interface name %q: want 1 to %d characters, no '/' or space", c.Interface, unix.IFNAMSIZ-1)
	}
	if c.MTU < 0 || c.MTU > 65535 {
		return fmt.Errorf("interface %s: MTU %d out of range", c.Interface, c.MTU)
	}
	seen := map[netip.Prefix]bool{}
	for _, p := range c.Addresses {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("address %s: %w", p, err)
		}
		if p.Addr().IsUnspecified() {
			return fmt.Errorf("address %s: unspecified", p)
		}
		if seen[p] {
			return fmt.Errorf("address %s listed twice", p)
		}
		seen[p] = true
		if p.Addr().Is6() && c.MTU != 0 && c.MTU < 1280 {
			return fmt.Errorf("interface %s: MTU %d is below IPv6's minimum of 1280 and it has address %s", c.Interface, c.MTU, p)
		}
	}
	clear(seen)
	for _, p := range c.Routes {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("route %s: %w", p, err)
		}
		if p != p.Masked() {
			return fmt.Errorf("route %s: host bits set (did you mean %s?)", p, p.Masked())
		}
		if seen[p] {
			return fmt.Errorf("route %s listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("invalid prefix")
	case p.Addr().Is4In6():
		return errors.New("IPv4-mapped IPv6 address; use the IPv4 form")
	case p.Addr().Zone() != "":
		return errors.New("zone not allowed")
	}
	return nil
}

// Router applies Configs to the kernel. Its methods are safe for concurrent use.
type Router struct {
	mu sync.Mutex
	k  kernel
}

// New returns a Router that works in the network namespace of h. The caller keeps
// ownership of h and closes it after the last Set.
func New(h *nl.Handle) *Router { return &Router{k: nlKernel{h}} }

// Set makes the interface hold exactly cfg, changing only what differs. It returns
// ErrNoChanges when nothing had to change. After an error part of cfg may be applied;
// calling Set again continues from what the kernel holds.
//
// Order: the link is set to MTU and up (Linux adds no IPv4 route through a down
// link), missing addresses are added, stale addresses are removed, and only then are
// the routes read and fixed, because removing an address makes the kernel delete the
// IPv4 routes that used it as source, and all IPv4 routes of the link with its last
// IPv4 address.
func (r *Router) Set(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dev := cfg.Interface
	changed := false

	ls, err := r.k.link(dev)
	if err != nil {
		return fmt.Errorf("reading interface %s: %w", dev, err)
	}
	mtu := 0
	if cfg.MTU != 0 && ls.mtu != cfg.MTU {
		mtu = cfg.MTU
	}
	if mtu != 0 || !ls.up {
		if err := r.k.setLink(dev, mtu, !ls.up); err != nil {
			return fmt.Errorf("setting up interface %s: %w", dev, err)
		}
		changed = true
	}

	have, err := r.k.addrs(dev)
	if err != nil {
		return fmt.Errorf("reading addresses of %s: %w", dev, err)
	}
	want := map[netip.Prefix]bool{}
	for _, p := range cfg.Addresses {
		want[p] = true
	}
	held := map[netip.Prefix]bool{}
	for _, a := range have {
		held[a.prefix] = true
	}
	for _, p := range cfg.Addresses {
		if held[p] {
			continue
		}
		if err := r.k.addAddr(dev, newAddress(p)); err != nil {
			return fmt.Errorf("adding address %s to %s: %w", p, dev, err)
		}
		changed = true
	}

	for _, a := range have {
		if want[a.prefix] || a.kernelOwned() {
			continue
		}
		if err := r.k.delAddr(dev, a); err != nil {
			return fmt.Errorf("deleting address %s from %s: %w", a.prefix, dev, err)
		}
		changed = true
	}

	routeChanged, err := r.setRoutes(cfg)
	if err != nil {
		return err
	}
	if !changed && !routeChanged {
		return ErrNoChanges
	}
	return nil
}

// setRoutes deletes the routes of Protocol through the interface that cfg does not
// want (or wants with other attributes) and adds the missing ones.
func (r *Router) setRoutes(cfg Config) (changed bool, err error) {
	dev := cfg.Interface
	want := wantRoutes(cfg)
	wanted := map[route]bool{}
	for _, w := range want {
		wanted[w] = true
	}
	have, err := r.k.routes(dev)
	if err != nil {
		return false, fmt.Errorf("reading routes through %s: %w", dev, err)
	}
	kept := map[route]bool{}
	for _, h := range have {
		k := h.key()
		if wanted[k] && !kept[k] {
			kept[k] = true
			continue
		}
		if err := r.k.delRoute(dev, h); err != nil {
			return changed, fmt.Errorf("deleting route %s: %w", h.format(dev), err)
		}
		changed = true
	}
	for _, w := range want {
		if kept[w] {
			continue
		}
		if err := r.k.addRoute(dev, w); err != nil {
			return changed, fmt.Errorf("adding route %s: %w", w.format(dev), err)
		}
		changed = true
	}
	return changed, nil
}

// wantRoutes returns the routes cfg asks for, in its order.
func wantRoutes(cfg Config) []route {
	var src4, src6 netip.Addr
	for _, p := range cfg.Addresses {
		switch {
		case p.Addr().Is4() && !src4.IsValid():
			src4 = p.Addr()
		case p.Addr().Is6() && !src6.IsValid():
			src6 = p.Addr()
		}
	}
	out := make([]route, 0, len(cfg.Routes))
	for _, p := range cfg.Routes {
		if p.Addr().Is4() {
			out = append(out, route{dst: p, src: src4, scope: unix.RT_SCOPE_LINK})
		} else {
			// The kernel keeps no scope for IPv6 routes; it reports them as universe.
			out = append(out, route{dst: p, src: src6, scope: unix.RT_SCOPE_UNIVERSE})
		}
	}
	return out
}

// linkState is what Set needs to know about the interface.
type linkState struct {
	mtu int
	up  bool
}

// address is one address of the interface.
type address struct {
	prefix netip.Prefix
	flags  uint32 // unix.IFA_F_*
}

// newAddress returns the address Set adds for p: never with a kernel prefix route
// (the routes are exactly Config.Routes), and IPv6 without duplicate address detection
// so that it is usable, also as a route's source, at once.
func newAddress(p netip.Prefix) address {
	a := address{prefix: p, flags: unix.IFA_F_NOPREFIXROUTE}
	if p.Addr().Is6() {
		a.flags |= unix.IFA_F_NODAD
	}
	return a
}

// kernelOwned reports whether the kernel manages a, so Set leaves it alone.
func (a address) kernelOwned() bool {
	return a.prefix.Addr().Is6() && a.prefix.Addr().IsLinkLocalUnicast()
}

// format writes a like the arguments of `ip addr add`.
func (a address) format(dev string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s dev %s", a.prefix, dev)
	if a.flags&unix.IFA_F_NODAD != 0 {
		b.WriteString(" nodad")
	}
	if a.flags&unix.IFA_F_NOPREFIXROUTE != 0 {
		b.WriteString(" noprefixroute")
	}
	return b.String()
}

// route is one route of the main table through the interface.
type route struct {
	dst    netip.Prefix
	src    netip.Addr // preferred source; zero for none
	gw     netip.Addr // never set by Set; a marked route with a gateway is stale
	scope  uint8      // unix.RT_SCOPE_*
	metric int        // as read from the kernel, to delete the right one; not compared
}

// key returns r without the attributes that do not make it a different route for Set.
func (r route) key() route {
	r.metric = 0
	return r
}

// format writes r like the arguments of `ip route add`.
func (r route) format(dev string) string {
	var b strings.Builder
	b.WriteString(r.dst.String())
	if r.gw.IsValid() {
		fmt.Fprintf(&b, " via %s", r.gw)
	}
	fmt.Fprintf(&b, " dev %s", dev)
	switch r.scope {
	case unix.RT_SCOPE_UNIVERSE:
	case unix.RT_SCOPE_LINK:
		b.WriteString(" scope link")
	default:
		fmt.Fprintf(&b, " scope %d", r.scope)
	}
	if r.src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.src)
	}
	if r.metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.metric)
	}
	b.WriteString(" proto cvlan")
	return b.String()
}
