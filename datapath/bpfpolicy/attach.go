package bpfpolicy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hook is one attachment of a program: a pinned TCX link, or a clsact filter.
type hook struct {
	ingress bool
	tcx     link.Link // nil in clsact mode
	clsact  bool
}

func (h *hook) mode() string {
	if h.clsact {
		return "clsact"
	}
	return "tcx"
}

func (h *hook) dir() string {
	if h.ingress {
		return "ingress"
	}
	return "egress"
}

// Pin names of the links in the pin directory.
const (
	pinLinkIngress = "link_ingress"
	pinLinkEgress  = "link_egress"
)

// attach hooks both programs to e.ifindex. With pinned links from an earlier Open it
// moves them to the new programs (link update: the hook never runs without a
// program). Without, it uses clsact if forced or if a cvlan clsact filter is already
// there (an earlier Open on a kernel without TCX), and TCX otherwise, falling back
// to clsact if the kernel has no TCX.
func (e *Enforcer) attach(forceClsact bool) error {
	progs := [2]*ebpf.Program{e.objs.CvlanIngress, e.objs.CvlanEgress}
	types := [2]ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress}
	pins := [2]string{filepath.Join(e.pinDir, pinLinkIngress), filepath.Join(e.pinDir, pinLinkEgress)}

	useClsact := forceClsact
	if !useClsact {
		_, err0 := os.Stat(pins[0])
		_, err1 := os.Stat(pins[1])
		if err0 != nil && err1 != nil {
			has, err := hasClsactFilter(e.ifindex)
			if err != nil {
				return err
			}
			useClsact = has
		}
	}
	for i := range progs {
		e.hooks[i].ingress = i == 0
		if !useClsact {
			l, err := attachTCX(e.ifindex, progs[i], types[i], pins[i])
			if err == nil {
				e.hooks[i].tcx = l
				continue
			}
			if !errors.Is(err, link.ErrNotSupported) {
				return err
			}
			e.log.Warn("kernel has no TCX, attaching through clsact", "error", err)
			useClsact = true
		}
		if err := attachClsact(e.ifindex, progs[i], i == 0); err != nil {
			return err
		}
		e.hooks[i].clsact = true
	}
	return nil
}

// attachTCX attaches prog through a TCX link pinned at pin, reusing a pinned link
// that is attached to ifindex at the same hook.
func attachTCX(ifindex int, prog *ebpf.Program, typ ebpf.AttachType, pin string) (link.Link, error) {
	old, err := link.LoadPinnedLink(pin, nil)
	switch {
	case errors.Is(err, os.ErrNotExist):
		old = nil
	case err != nil:
		return nil, fmt.Errorf("loading pinned link %s: %w", pin, err)
	}
	if old != nil {
		info, err := old.Info()
		if err != nil {
			old.Close()
			return nil, fmt.Errorf("reading pinned link %s: %w", pin, err)
		}
		if tcx := info.TCX(); tcx != nil && int(tcx.Ifindex) == ifindex && ebpf.AttachType(tcx.AttachType) == typ {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, fmt.Errorf("updating pinned link %s: %w", pin, err)
			}
			return old, nil
		}
		// Pinned for an interface that is gone (or another one): attach afresh
		// before letting the old link go.
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: typ, Anchor: link.Head()})
	if err != nil {
		if old != nil {
			old.Close()
		}
		return nil, fmt.Errorf("attaching %s: %w", typ, err)
	}
	if old != nil {
		if err := old.Unpin(); err != nil {
			old.Close()
			l.Close()
			return nil, fmt.Errorf("unpinning stale link %s: %w", pin, err)
		}
		old.Close()
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pinning link %s: %w", pin, err)
	}
	return l, nil
}

// The clsact filter: one cls_bpf filter per direction, with this handle, priority and
// name, replaced in place on every Open.
const (
	clsactHandle = 1
	clsactPrio   = 1
	clsactName   = "cvlan_policy"
)

func clsactParent(ingress bool) uint32 {
	if ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

func clsactFilter(ifindex int, ingress bool, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    clsactParent(ingress),
			Handle:    clsactHandle,
			Priority:  clsactPrio,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         clsactName,
		DirectAction: true,
	}
}

// The clsact fallback talks rtnetlink itself, through a handle it opens in the
// calling thread's namespace for one call; datapath/nl has no qdisc or filter calls.
func withNetlink(f func(h *netlink.Handle) error) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening rtnetlink: %w", err)
	}
	defer h.Close()
	return f(h)
}

// attachClsact adds the clsact qdisc if missing and puts prog in cvlan's filter,
// replacing the program of an existing one atomically.
func attachClsact(ifindex int, prog *ebpf.Program, ingress bool) error {
	return withNetlink(func(h *netlink.Handle) error {
		q := &netlink.GenericQdisc{
			QdiscAttrs: netlink.QdiscAttrs{
				LinkIndex: ifindex,
				Handle:    netlink.MakeHandle(0xffff, 0),
				Parent:    netlink.HANDLE_CLSACT,
			},
			QdiscType: "clsact",
		}
		if err := h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("adding clsact qdisc: %w", err)
		}
		f := clsactFilter(ifindex, ingress, prog.FD())
		if err := h.FilterReplace(f); err != nil {
			return fmt.Errorf("setting %s filter: %w", (&hook{ingress: ingress}).dir(), err)
		}
		return nil
	})
}

// hasClsactFilter reports whether cvlan's ingress clsact filter is on ifindex.
func hasClsactFilter(ifindex int) (bool, error) {
	var found bool
	err := withNetlink(func(h *netlink.Handle) error {
		fs, err := h.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, clsactParent(true))
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil // no clsact qdisc
			}
			return fmt.Errorf("listing ingress filters: %w", err)
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == clsactName && bf.Handle == clsactHandle {
				found = true
			}
		}
		return nil
	})
	return found, err
}

// close releases the hook's file descriptor; a pinned link stays attached.
func (h *hook) close() {
	if h.tcx != nil {
		h.tcx.Close()
		h.tcx = nil
	}
}

// remove detaches the hook and drops its pin.
func (h *hook) remove(ifindex int) error {
	switch {
	case h.tcx != nil:
		defer h.close()
		if err := h.tcx.Unpin(); err != nil {
			return fmt.Errorf("unpinning %s link: %w", h.dir(), err)
		}
		if err := h.tcx.Detach(); err != nil {
			return fmt.Errorf("detaching %s link: %w", h.dir(), err)
		}
	case h.clsact:
		h.clsact = false
		return withNetlink(func(nh *netlink.Handle) error {
			if err := nh.FilterDel(clsactFilter(ifindex, h.ingress, -1)); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("deleting %s filter: %w", h.dir(), err)
			}
			return nil
		})
	}
	return nil
}

func (e *Enforcer) closeHooks() {
	for i := range e.hooks {
		e.hooks[i].close()
	}
}
