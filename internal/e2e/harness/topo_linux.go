package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ipTimeout bounds one `ip` command of the topology.
const ipTimeout = 10 * time.Second

// NS is a network namespace made by the harness.
type NS struct {
	// Name is the namespace's `ip netns` name (`ip -n Name …`).
	Name string
	hub  bool

	mu    sync.Mutex
	addrs []netip.Prefix
	nifs  int
}

// Path returns the file the namespace is bound to, for setns and netlink.NewHandleAt.
func (ns *NS) Path() string { return filepath.Join(netnsDir, ns.Name) }

// Addr returns the first underlay address given to Attach for this namespace (no
// prefix length), or "" if it has none.
func (ns *NS) Addr() string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.addrs) == 0 {
		return ""
	}
	return ns.addrs[0].Addr().String()
}

// Addrs returns every underlay address given to Attach, in order, with prefix length.
func (ns *NS) Addrs() []netip.Prefix {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]netip.Prefix(nil), ns.addrs...)
}

// LAN is a layer-2 segment: a bridge "br0" in a hub namespace of its own.
type LAN struct {
	// Prefix is the LAN's subnet.
	Prefix netip.Prefix
	// Hub is the namespace that holds the bridge and the hub ends of the veth pairs.
	Hub *NS

	mu     sync.Mutex
	nports int
}

// Netns makes a namespace named Prefix()+"-"+name with lo up and IPv6 duplicate
// address detection off (addresses are usable at once). name is lowercase letters,
// digits and dashes, unique within the harness.
func (h *H) Netns(name string) *NS {
	h.t.Helper()
	if !validName(name, true) {
		h.t.Fatalf("harness: namespace name %q must be lowercase letters, digits and dashes", name)
	}
	ns, err := h.netns(name, false)
	if err != nil {
		h.t.Fatalf("harness: %v", err)
	}
	return ns
}

func (h *H) netns(name string, hub bool) (*NS, error) {
	full := h.prefix + "-" + name
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, fmt.Errorf("making namespace %s: %w", full, errClosed)
	case h.names[full]:
		h.mu.Unlock()
		return nil, fmt.Errorf("making namespace %s: the harness already has one of that name", full)
	}
	h.names[full] = true
	h.mu.Unlock()

	if err := ipRun("netns", "add", full); err != nil {
		return nil, fmt.Errorf("making namespace %s: %w", full, err)
	}
	ns := &NS{Name: full, hub: hub}
	h.mu.Lock()
	h.nss = append(h.nss, ns) // before anything else can fail, so cleanup deletes it
	h.mu.Unlock()
	if err := ipRun("-n", full, "link", "set", "lo", "up"); err != nil {
		return nil, fmt.Errorf("setting lo up in %s: %w", full, err)
	}
	err := inNetns(ns.Path(), func() error {
		for _, conf := range []string{"all", "default"} {
			path := "/proc/sys/net/ipv6/conf/" + conf + "/accept_dad"
			if err := os.WriteFile(path, []byte("0"), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("writing %s: %w", path, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("turning off IPv6 DAD in %s: %w", full, err)
	}
	return ns, nil
}

// LAN makes a bridge in a new hub namespace for the subnet cidr ("10.99.0.0/24").
// The subnet is private to the LAN's namespaces, so tests may reuse it freely.
func (h *H) LAN(cidr string) *LAN {
	h.t.Helper()
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil {
		h.t.Fatalf("harness: LAN(%q): %v", cidr, err)
	}
	h.mu.Lock()
	n := h.lans
	h.lans++
	h.mu.Unlock()
	hub, err := h.netns("hub"+strconv.Itoa(n), true)
	if err != nil {
		h.t.Fatalf("harness: %v", err)
	}
	if err := ipRun("-n", hub.Name, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"); err != nil {
		h.t.Fatalf("harness: making the bridge of LAN %s: %v", cidr, err)
	}
	if err := ipRun("-n", hub.Name, "link", "set", "br0", "up"); err != nil {
		h.t.Fatalf("harness: setting the bridge of LAN %s up: %v", cidr, err)
	}
	return &LAN{Prefix: prefix.Masked(), Hub: hub}
}

// Attach connects ns to lan with a veth pair: the hub end is enslaved to the bridge,
// the other end is named eth0 (eth1, … for later attachments of the same namespace),
// gets the address addr ("10.99.0.2/24", or "10.99.0.2" for the LAN's prefix length)
// and is set up. It returns the interface name in ns.
func (h *H) Attach(ns *NS, lan *LAN, addr string) string {
	h.t.Helper()
	ifname, err := h.attach(ns, lan, addr)
	if err != nil {
		h.t.Fatalf("harness: attaching %s to LAN %s: %v", ns.Name, lan.Prefix, err)
	}
	return ifname
}

func (h *H) attach(ns *NS, lan *LAN, addr string) (string, error) {
	if !strings.Contains(addr, "/") {
		addr += "/" + strconv.Itoa(lan.Prefix.Bits())
	}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		return "", err
	}
	if p.Bits() != lan.Prefix.Bits() || !lan.Prefix.Contains(p.Addr()) {
		return "", fmt.Errorf("address %s is not in %s", p, lan.Prefix)
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return "", errClosed
	}

	lan.mu.Lock()
	port := "p" + strconv.Itoa(lan.nports)
	lan.nports++
	lan.mu.Unlock()
	ns.mu.Lock()
	ifname := "eth" + strconv.Itoa(ns.nifs)
	ns.nifs++
	ns.mu.Unlock()

	hub := lan.Hub.Name
	// Both ends are made inside namespaces: nothing appears in the host namespace.
	if err := ipRun("-n", hub, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns.Name); err != nil {
		return "", err
	}
	if err := ipRun("-n", hub, "link", "set", port, "master", "br0", "up"); err != nil {
		return "", err
	}
	args := []string{"-n", ns.Name, "addr", "add", p.String(), "dev", ifname}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	if err := ipRun(args...); err != nil {
		return "", err
	}
	if err := ipRun("-n", ns.Name, "link", "set", ifname, "up"); err != nil {
		return "", err
	}
	ns.mu.Lock()
	ns.addrs = append(ns.addrs, p)
	ns.mu.Unlock()
	return ifname, nil
}

// ipOutput runs the ip command with a timeout and returns its output.
func ipOutput(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func ipRun(args ...string) error {
	_, err := ipOutput(args...)
	return err
}

// deleteNetns kills every process left in a namespace (daemons may fork children that
// leave their process group) and deletes it, which destroys its veths and bridges.
func deleteNetns(name string) error {
	out, err := ipOutput("netns", "pids", name)
	if err != nil {
		if _, statErr := os.Stat(filepath.Join(netnsDir, name)); errors.Is(statErr, fs.ErrNotExist) {
			return nil // already gone
		}
		return fmt.Errorf("listing the processes of namespace %s: %w", name, err)
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if err := ipRun("netns", "delete", name); err != nil {
		return fmt.Errorf("deleting namespace %s: %w", name, err)
	}
	return nil
}

// listNetns returns the names of all named network namespaces.
func listNetns() ([]string, error) {
	out, err := ipOutput("netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0]) // "name (id: 3)"
		}
	}
	return names, nil
}
