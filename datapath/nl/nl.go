package nl

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotFound is wrapped by the errors of lookups whose object does not exist.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned by every method of a Handle after Close.
var ErrClosed = errors.New("netlink handle closed")

// dumpAttempts is how many times a dump is tried when the kernel keeps reporting
// NLM_F_DUMP_INTR (the table changed while it was being read).
const dumpAttempts = 5

// Handle is an rtnetlink connection to one network namespace. Its methods are safe for
// concurrent use; requests are serialized, because netlink.Handle shares one socket per
// family and concurrent readers could take each other's replies.
type Handle struct {
	mu sync.Mutex
	h  *netlink.Handle // nil after Close
}

// Open returns a handle to the network namespace of the calling thread, which is the
// process's namespace unless the caller has switched a locked thread.
func Open() (*Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening rtnetlink socket: %w", err)
	}
	return &Handle{h: h}, nil
}

// OpenAt returns a handle to the network namespace ns. The socket is created on a
// locked thread of a fresh goroutine that enters ns and goes back; if going back
// fails, that thread stays locked so that the Go runtime discards it rather than
// reusing a thread in the wrong namespace. ns may be closed once OpenAt returns.
func OpenAt(ns netns.NsHandle) (*Handle, error) {
	if !ns.IsOpen() {
		return nil, errors.New("opening rtnetlink socket: namespace handle is not open")
	}
	type result struct {
		h   *netlink.Handle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, restored, err := openIn(ns)
		if restored {
			runtime.UnlockOSThread()
		}
		// Otherwise the goroutine ends with its thread locked and Go kills the thread.
		done <- result{h, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	return &Handle{h: r.h}, nil
}

// openIn runs on a locked thread: it enters ns, opens the socket and goes back. It
// reports whether the thread is back in its original namespace.
func openIn(ns netns.NsHandle) (h *netlink.Handle, restored bool, err error) {
	orig, err := netns.Get()
	if err != nil {
		return nil, true, fmt.Errorf("reading the thread's network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return nil, true, fmt.Errorf("entering network namespace %s: %w", ns, err)
	}
	h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		err = fmt.Errorf("opening rtnetlink socket in %s: %w", ns, err)
	}
	if serr := netns.Set(orig); serr != nil {
		// The socket is bound to ns already, so h is still good; only the thread is lost.
		return h, false, err
	}
	return h, true, err
}

// OpenPath returns a handle to the network namespace bound at path, such as
// /var/run/netns/NAME or /proc/PID/ns/net.
func OpenPath(path string) (*Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := OpenAt(ns)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return h, nil
}

// Close releases the socket. It is safe to call more than once.
func (h *Handle) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != nil {
		h.h.Close()
		h.h = nil
	}
	return nil
}

// do runs f with the netlink handle under the lock.
func (h *Handle) do(f func(*netlink.Handle) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h == nil {
		return ErrClosed
	}
	return f(h.h)
}

// dump runs f until it returns something other than netlink.ErrDumpInterrupted, at most
// dumpAttempts times.
func dump[T any](h *Handle, f func(*netlink.Handle) (T, error)) (T, error) {
	var v T
	err := h.do(func(nh *netlink.Handle) error {
		var err error
		v, err = retry(func() (T, error) { return f(nh) })
		return err
	})
	return v, err
}

// retry calls f until its error is not netlink.ErrDumpInterrupted, at most dumpAttempts
// times; a dump still interrupted on the last attempt is an error, with no result.
func retry[T any](f func() (T, error)) (T, error) {
	var zero T
	for range dumpAttempts {
		v, err := f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return zero, fmt.Errorf("%w %d times in a row", netlink.ErrDumpInterrupted, dumpAttempts)
}

// notFound reports whether err says that a link does not exist.
func notFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, syscall.ENODEV)
}

// LinkByName returns the link called name; the error wraps ErrNotFound if there is none.
func (h *Handle) LinkByName(name string) (netlink.Link, error) {
	l, err := dump(h, func(nh *netlink.Handle) (netlink.Link, error) { return nh.LinkByName(name) })
	switch {
	case err == nil:
		return l, nil
	case notFound(err):
		return nil, fmt.Errorf("link %s: %w", name, ErrNotFound)
	default:
		return nil, fmt.Errorf("looking up link %s: %w", name, err)
	}
}

// LinkList returns every link of the namespace.
func (h *Handle) LinkList() ([]netlink.Link, error) {
	ls, err := dump(h, func(nh *netlink.Handle) ([]netlink.Link, error) { return nh.LinkList() })
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	return ls, nil
}

// LinkAdd creates link. Errors wrap the kernel's errno, so callers can test for
// unix.EEXIST or unix.EOPNOTSUPP (no such link type) with errors.Is.
func (h *Handle) LinkAdd(link netlink.Link) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.LinkAdd(link) }); err != nil {
		return fmt.Errorf("adding %s link %s: %w", link.Type(), link.Attrs().Name, err)
	}
	return nil
}

// LinkDel deletes link.
func (h *Handle) LinkDel(link netlink.Link) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.LinkDel(link) }); err != nil {
		return fmt.Errorf("deleting link %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// LinkSetUp sets link administratively up.
func (h *Handle) LinkSetUp(link netlink.Link) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.LinkSetUp(link) }); err != nil {
		return fmt.Errorf("setting link %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// LinkSetMTU sets the MTU of link.
func (h *Handle) LinkSetMTU(link netlink.Link, mtu int) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.LinkSetMTU(link, mtu) }); err != nil {
		return fmt.Errorf("setting MTU of link %s to %d: %w", link.Attrs().Name, mtu, err)
	}
	return nil
}

// AddrList returns the addresses of link (all links if nil) of family
// (netlink.FAMILY_ALL, FAMILY_V4 or FAMILY_V6).
func (h *Handle) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	as, err := dump(h, func(nh *netlink.Handle) ([]netlink.Addr, error) { return nh.AddrList(link, family) })
	if err != nil {
		return nil, fmt.Errorf("listing addresses%s: %w", onLink(link), err)
	}
	return as, nil
}

// AddrAdd adds addr to link.
func (h *Handle) AddrAdd(link netlink.Link, addr *netlink.Addr) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.AddrAdd(link, addr) }); err != nil {
		return fmt.Errorf("adding address %s%s: %w", addr.IPNet, onLink(link), err)
	}
	return nil
}

// AddrDel removes addr from link.
func (h *Handle) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.AddrDel(link, addr) }); err != nil {
		return fmt.Errorf("deleting address %s%s: %w", addr.IPNet, onLink(link), err)
	}
	return nil
}

// RouteListFiltered returns the routes of family that match filter in the fields
// selected by mask (netlink.RT_FILTER_*). With netlink.RT_FILTER_TABLE in mask and
// filter.Table zero, it lists every table.
func (h *Handle) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	rs, err := dump(h, func(nh *netlink.Handle) ([]netlink.Route, error) {
		return nh.RouteListFiltered(family, filter, mask)
	})
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	return rs, nil
}

// RouteAdd adds route; it fails with unix.EEXIST if the same route exists.
func (h *Handle) RouteAdd(route *netlink.Route) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.RouteAdd(route) }); err != nil {
		return fmt.Errorf("adding route %s: %w", route.Dst, err)
	}
	return nil
}

// RouteDel deletes route.
func (h *Handle) RouteDel(route *netlink.Route) error {
	if err := h.do(func(nh *netlink.Handle) error { return nh.RouteDel(route) }); err != nil {
		return fmt.Errorf("deleting route %s: %w", route.Dst, err)
	}
	return nil
}

func onLink(link netlink.Link) string {
	if link == nil {
		return ""
	}
	return " on " + link.Attrs().Name
}
