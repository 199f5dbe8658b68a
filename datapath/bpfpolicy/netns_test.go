package bpfpolicy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/internal/e2e/harness"
)

// The attach tests build namespaces with internal/e2e/harness, which cleans them up
// (and the pin directories of the interfaces it names) even when a test times out.
func TestMain(m *testing.M) { harness.Main(m) }

// inNS runs fn on a locked thread inside ns. Sockets and devices fn creates stay in
// ns. If the thread cannot return to its namespace it stays locked, so Go retires it.
func inNS(ns *harness.NS, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		target, err := os.Open(ns.Path())
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", ns.Name, err)
			return
		}
		fnErr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("returning from %s: %w", ns.Name, err) // thread stays locked
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

func mustInNS(t testing.TB, ns *harness.NS, fn func() error) {
	t.Helper()
	if err := inNS(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// openIn opens an Enforcer in ns, closed when the test ends.
func openIn(t testing.TB, ns *harness.NS, opts Options) *Enforcer {
	t.Helper()
	var e *Enforcer
	mustInNS(t, ns, func() (err error) {
		e, err = Open(opts)
		return err
	})
	t.Cleanup(func() { e.Close() })
	return e
}

// pinDir is a pin directory the harness removes when the test ends.
func pinDir(h *harness.H, suffix string) string {
	return filepath.Join(harness.BPFPinDir, h.Interface(suffix))
}

// eventually polls f every 20 ms until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	harness.Eventually(t, timeout, 20*time.Millisecond, f)
}

// countOf returns one reason counter ("drop:no_rule") of e.
func countOf(t testing.TB, e *Enforcer, reason string) uint64 {
	t.Helper()
	return snapshot(t, e).reasons[reason]
}

// grows returns a check for eventually that succeeds once reason has grown past its
// count at the time of the call.
func grows(t testing.TB, e *Enforcer, reason string) func() error {
	t.Helper()
	before := countOf(t, e, reason)
	return func() error {
		if n := countOf(t, e, reason); n <= before {
			return fmt.Errorf("%s still %d", reason, n)
		}
		return nil
	}
}

// udpSink is a UDP socket that counts what it receives.
type udpSink struct {
	conn *net.UDPConn
	n    atomic.Int64
}

func listenUDP(t testing.TB, ns *harness.NS, addr string) *udpSink {
	t.Helper()
	s := &udpSink{}
	mustInNS(t, ns, func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		s.conn, err = net.ListenUDP("udp", a)
		return err
	})
	t.Cleanup(func() { s.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := s.conn.ReadFromUDP(buf); err != nil {
				return
			}
			s.n.Add(1)
		}
	}()
	return s
}

// received returns a check for eventually that succeeds once s has more than n
// datagrams.
func (s *udpSink) receivedMoreThan(n int64) func() error {
	return func() error {
		if got := s.n.Load(); got <= n {
			return fmt.Errorf("%s received %d datagrams", s.conn.LocalAddr(), got)
		}
		return nil
	}
}

// dialUDP returns a UDP socket in ns connected to addr.
func dialUDP(t testing.TB, ns *harness.NS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	mustInNS(t, ns, func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.DialUDP("udp", nil, a)
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// echoServer accepts TCP connections on addr in ns and echoes what they send.
func echoServer(t testing.TB, ns *harness.NS, addr string) {
	t.Helper()
	var l net.Listener
	mustInNS(t, ns, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
}

// dialTCP connects from ns to addr within timeout.
func dialTCP(ns *harness.NS, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// echo writes msg on c and reads it back within a second.
func echo(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// sendRawFrame sends one Ethernet frame out of ifname in ns.
func sendRawFrame(t testing.TB, ns *harness.NS, ifname string, frame []byte) {
	t.Helper()
	mustInNS(t, ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(hton16(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: hton16(unix.ETH_P_ALL)}
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			return fmt.Errorf("sending a raw frame: %w", err)
		}
		return nil
	})
}

// tunDevice creates a TUN device (IP packets, no packet information) in ns, removed
// when the test ends. Writing to it injects packets at the device's ingress; reading
// returns what the kernel sends out of it.
func tunDevice(t testing.TB, ns *harness.NS, name string) *os.File {
	t.Helper()
	var f *os.File
	mustInNS(t, ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	t.Cleanup(func() { f.Close() })
	return f
}

// readPacket reads packets from a TUN device until match accepts one or timeout
// passes.
func readPacket(f *os.File, timeout time.Duration, match func([]byte) bool) ([]byte, error) {
	f.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 65536)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("no matching packet within %v", timeout)
			}
			return nil, err
		}
		if match(buf[:n]) {
			return buf[:n], nil
		}
	}
}

// skipWithoutTCX skips t where the kernel really has no TCX links (before 6.6),
// found by attaching a do-nothing program to lo in ns; anywhere TCX exists the
// TCX variants run and must pass.
func skipWithoutTCX(t *testing.T, ns *harness.NS) {
	t.Helper()
	var missing bool
	mustInNS(t, ns, func() error {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.SchedCLS, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		})
		if err != nil {
			return fmt.Errorf("loading the TCX probe: %w", err)
		}
		defer prog.Close()
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Index, Program: prog, Attach: ebpf.AttachTCXIngress})
		if errors.Is(err, ebpf.ErrNotSupported) {
			missing = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("probing TCX: %w", err)
		}
		return l.Close()
	})
	if missing {
		t.Skip("the kernel has no TCX links (6.6+); the clsact variant covers it")
	}
}
