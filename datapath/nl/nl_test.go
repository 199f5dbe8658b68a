package nl

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/internal/privileged"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestRetry(t *testing.T) {
	other := errors.New("other")
	for _, tc := range []struct {
		name      string
		errs      []error // returned by successive calls; the last repeats
		wantCalls int
		wantErr   error
		wantValue int
	}{
		{"first try", []error{nil}, 1, nil, 1},
		{"interrupted twice", []error{netlink.ErrDumpInterrupted, netlink.ErrDumpInterrupted, nil}, 3, nil, 3},
		{"other error", []error{other}, 1, other, 1},
		{"always interrupted", []error{netlink.ErrDumpInterrupted}, dumpAttempts, netlink.ErrDumpInterrupted, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			v, err := retry(func() (int, error) {
				calls++
				return calls, tc.errs[min(calls, len(tc.errs))-1]
			})
			if calls != tc.wantCalls {
				t.Errorf("calls = %d, want %d", calls, tc.wantCalls)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if v != tc.wantValue {
				t.Errorf("value = %d, want %d", v, tc.wantValue)
			}
		})
	}
}

// newNetns creates a named network namespace for the test and deletes it at the end.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("cvlan-nl-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	return name
}

func TestHandleInNamespace(t *testing.T) {
	privileged.Require(t)
	ns := newNetns(t)
	h, err := OpenPath("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })

	if _, err := h.LinkByName("lo"); err != nil {
		t.Fatalf("LinkByName(lo): %v", err)
	}
	if _, err := h.LinkByName("cvnl-missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LinkByName(missing) = %v, want ErrNotFound", err)
	}

	// This kernel has no dummy driver; one end of a veth pair serves as well.
	const dev, peer = "cvnl0", "cvnl1"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: peer}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(veth); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("adding %s twice = %v, want EEXIST", dev, err)
	}
	// The link lives in the namespace only.
	if _, err := netlink.LinkByName(dev); err == nil {
		t.Fatalf("%s is visible in the test's own namespace", dev)
	}
	link, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(link, 1380); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
		if l.Attrs().Name != dev {
			continue
		}
		if l.Attrs().MTU != 1380 || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s: mtu %d flags %v, want 1380 and up", dev, l.Attrs().MTU, l.Attrs().Flags)
		}
	}
	slices.Sort(names)
	if got, want := strings.Join(names, " "), "cvnl0 cvnl1 lo"; got != want {
		t.Errorf("links = %q, want %q", got, want)
	}

	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("100.64.9.1").To4(), Mask: net.CIDRMask(32, 32)}}
	if err := h.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "100.64.9.1/32" {
		t.Fatalf("addresses = %v, want [100.64.9.1/32]", addrs)
	}

	_, dst, _ := net.ParseCIDR("100.64.10.0/24")
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK, Protocol: 0xc7}
	if err := h.RouteAdd(route); err != nil {
		t.Fatal(err)
	}
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: 0xc7, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Dst.String() != "100.64.10.0/24" || rs[0].LinkIndex != link.Attrs().Index {
		t.Fatalf("routes = %v, want 100.64.10.0/24 on %s", rs, dev)
	}
	if err := h.RouteDel(route); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteDel(route); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("deleting the route twice = %v, want ESRCH", err)
	}
	if err := h.AddrDel(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(peer); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LinkByName(peer) after delete = %v, want ErrNotFound", err)
	}
	h.Close()
	if _, err := h.LinkList(); !errors.Is(err, ErrClosed) {
		t.Fatalf("LinkList after Close = %v, want ErrClosed", err)
	}
}
