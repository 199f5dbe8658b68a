package relay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
	"github.com/cvlan/cvlan/internal/privileged"
)

// topo is three namespaces: peer A and peer B, each joined to the relay by a veth
// pair on its own subnet. The relay does not forward, so A and B cannot reach each
// other except through the relay's sessions.
//
//	nsA a0 10.71.1.2/24 --- ra 10.71.1.1/24 nsR rb 10.71.2.1/24 --- b0 10.71.2.2/24 nsB
type topo struct {
	nsA, nsR, nsB string
}

var (
	relayA = netip.MustParseAddr("10.71.1.1")
	relayB = netip.MustParseAddr("10.71.2.1")
	addrA  = netip.MustParseAddr("10.71.1.2")
	addrB  = netip.MustParseAddr("10.71.2.2")
)

func ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a namespace with loopback up; it is deleted when the test ends,
// which also deletes its veths.
func newNetns(t testing.TB, name string) {
	t.Helper()
	exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	ip(t, "-n", name, "link", "set", "lo", "up")
}

func newTopo(t testing.TB, tag string) *topo {
	t.Helper()
	privileged.Require(t)
	pid := os.Getpid()
	tp := &topo{
		nsA: fmt.Sprintf("cvlan-rl%s-%d-a", tag, pid),
		nsR: fmt.Sprintf("cvlan-rl%s-%d-r", tag, pid),
		nsB: fmt.Sprintf("cvlan-rl%s-%d-b", tag, pid),
	}
	for _, ns := range []string{tp.nsA, tp.nsR, tp.nsB} {
		newNetns(t, ns)
	}
	for _, l := range []struct {
		peerNS, peerIf, relayIf string
		peer, relay             netip.Addr
	}{
		{tp.nsA, "a0", "ra", addrA, relayA},
		{tp.nsB, "b0", "rb", addrB, relayB},
	} {
		ip(t, "link", "add", l.peerIf, "netns", l.peerNS, "type", "veth", "peer", "name", l.relayIf, "netns", tp.nsR)
		ip(t, "-n", l.peerNS, "addr", "add", l.peer.String()+"/24", "dev", l.peerIf)
		ip(t, "-n", tp.nsR, "addr", "add", l.relay.String()+"/24", "dev", l.relayIf)
		ip(t, "-n", l.peerNS, "link", "set", l.peerIf, "up")
		ip(t, "-n", tp.nsR, "link", "set", l.relayIf, "up")
	}
	return tp
}

// inNetns runs f on a locked OS thread switched into namespace name. Sockets, links
// and interface lookups made by f belong to that namespace. If switching back fails
// the thread stays locked, so the runtime discards it.
func inNetns(name string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting the current namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening namespace %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering namespace %s: %w", name, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving namespace %s: %w", name, err))
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func mustIn(t testing.TB, ns string, f func() error) {
	t.Helper()
	if err := inNetns(ns, f); err != nil {
		t.Fatal(err)
	}
}

// attachPass attaches a do-nothing XDP program (XDP_PASS) in native mode to iface in
// ns: a veth only delivers frames sent to it with XDP_TX or a redirect if its receiving
// end has an XDP program.
func attachPass(t testing.TB, ns, iface string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatalf("loading the XDP_PASS program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	mustIn(t, ns, func() error {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifi.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attaching XDP_PASS to %s: %w", iface, err)
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
}

// listen opens a UDP socket at addr in ns.
func listen(t testing.TB, ns string, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	mustIn(t, ns, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func newSpec(id session.ID, portA, portB uint16) session.Spec {
	sp := session.Spec{ID: id, Ports: [2]uint16{portA, portB}}
	for i := range sp.Tokens {
		rand.Read(sp.Tokens[i][:])
	}
	return sp
}

// bind sends side's binds from c to the relay until an ack arrives (and, if
// wantPeer, one that says the other side is bound), with fresh counters each time.
func bind(t testing.TB, c *net.UDPConn, relay netip.AddrPort, sp session.Spec, side session.Side, wantPeer bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		counter := uint64(time.Now().UnixNano())
		pkt := session.Message{Type: session.TypeBind, Side: side, Session: sp.ID, Counter: counter}.Append(nil, &sp.Tokens[side])
		if _, err := c.WriteToUDPAddrPort(pkt, relay); err != nil {
			t.Fatalf("sending a bind: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break // resend
			}
			m, err := session.Parse(buf[:n])
			if err != nil || from != relay || !session.Verify(buf[:n], &sp.Tokens[side]) || m.Counter != counter {
				continue
			}
			if !wantPeer || m.Flags&session.FlagPeerBound != 0 {
				return
			}
			break
		}
	}
	t.Fatalf("side %s got no ack from %s", side, relay)
}

// exchange sends n datagrams from `from` to its relay port and checks that each
// arrives at `to` unchanged, from the other relay port.
func exchange(t testing.TB, from, to *net.UDPConn, via, wantSrc netip.AddrPort, n int) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := range n {
		// A WireGuard transport message header (type 4), then a counter.
		msg := fmt.Appendf([]byte{4, 0, 0, 0}, "datagram %d %s", i, strings.Repeat("x", i%200))
		if _, err := from.WriteToUDPAddrPort(msg, via); err != nil {
			t.Fatalf("sending: %v", err)
		}
		to.SetReadDeadline(time.Now().Add(2 * time.Second))
		k, src, err := to.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("datagram %d sent to %s did not arrive at %s: %v", i, via, to.LocalAddr(), err)
		}
		if !bytes.Equal(buf[:k], msg) || src != wantSrc {
			t.Fatalf("datagram %d arrived as %q from %s, want %q from %s", i, buf[:k], src, msg, wantSrc)
		}
	}
}

// udpCsumErrors reads UdpInCsumErrors of ns from /proc/net/snmp.
func udpCsumErrors(t testing.TB, ns string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatalf("reading /proc/net/snmp in %s: %v", ns, err)
	}
	var header []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		for i, name := range header {
			if name == "InCsumErrors" && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	t.Fatalf("no Udp InCsumErrors in /proc/net/snmp of %s", ns)
	return 0
}

// newRelay starts a relay in the relay namespace, serving sp.
func newRelay(t testing.TB, tp *topo, mode xdprelay.Mode, specs ...session.Spec) *Relay {
	t.Helper()
	var r *Relay
	mustIn(t, tp.nsR, func() (err error) {
		r, err = New(Options{XDP: mode, Interfaces: []string{"ra", "rb"}, CheckInterval: time.Hour})
		if err != nil {
			return err
		}
		return r.Set(specs)
	})
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("closing the relay: %v", err)
		}
	})
	return r
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronization
	}
}
