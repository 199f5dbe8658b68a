package wg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/nl"
)

// SocketDir is where wireguard-go puts the UAPI sockets (one per interface name). It
// is a path on the host's file system, shared by every network namespace.
const SocketDir = "/var/run/wireguard"

// DefaultMTU is the MTU Open uses when Options.MTU is 0: 1500 minus the largest
// WireGuard overhead (IPv6 outer header 40, UDP 8, WireGuard 32).
const DefaultMTU = 1420

// Implementations reported by Device.Impl.
const (
	ImplKernel    = "kernel"
	ImplUserspace = "userspace"
)

var (
	// ErrNoChanges is returned by Set when the device already had the configuration.
	ErrNoChanges = errors.New("wg: no changes")
	// ErrKernelUnsupported is wrapped by Open's error in ModeKernel when the kernel
	// has no WireGuard.
	ErrKernelUnsupported = errors.New("the kernel has no WireGuard")
	// ErrInUse is wrapped by Open's error when a live device already answers on the
	// interface name's UAPI socket, in this or any other network namespace.
	ErrInUse = errors.New("interface name in use by another WireGuard device on this host")
	// ErrClosed is returned by the methods of a closed Device.
	ErrClosed = errors.New("wg: device closed")
)

// Mode chooses the WireGuard implementation.
type Mode string

const (
	// ModeAuto uses the kernel's WireGuard and falls back to wireguard-go when the
	// kernel has none. The zero Mode is ModeAuto.
	ModeAuto Mode = "auto"
	// ModeKernel uses the kernel's WireGuard or fails.
	ModeKernel Mode = "kernel"
	// ModeUserspace runs wireguard-go in this process without trying the kernel.
	ModeUserspace Mode = "userspace"
)

// Options says which device Open creates.
type Options struct {
	// Name is the interface name, unique on the host (see SocketDir).
	Name string
	// MTU of the interface; 0 means DefaultMTU.
	MTU int
	// Mode chooses the implementation; "" is ModeAuto.
	Mode Mode
	// Log receives what the device does; nil discards it.
	Log *slog.Logger
}

func (o Options) validate() error {
	if o.Name == "" || len(o.Name) > unix.IFNAMSIZ-1 || strings.ContainsAny(o.Name, "/ \t\n") || o.Name == "." || o.Name == ".." {
		return fmt.Errorf("interface name %q: want 1 to %d characters, no '/' or space", o.Name, unix.IFNAMSIZ-1)
	}
	if o.MTU != 0 && (o.MTU < 576 || o.MTU > 65535) {
		return fmt.Errorf("interface %s: MTU %d out of range", o.Name, o.MTU)
	}
	switch o.Mode {
	case "", ModeAuto, ModeKernel, ModeUserspace:
		return nil
	}
	return fmt.Errorf("WireGuard mode %q: want %q, %q or %q", o.Mode, ModeAuto, ModeKernel, ModeUserspace)
}

// client is the part of wgctrl.Client that Device uses; tests put a fake in its place.
type client interface {
	// Device returns the configuration and state of the named device.
	Device(name string) (*wgtypes.Device, error)
	// ConfigureDevice applies cfg to the named device.
	ConfigureDevice(name string, cfg wgtypes.Config) error
	// Close releases the client.
	Close() error
}

var _ client = (*wgctrl.Client)(nil)

// Device is an open WireGuard interface. Its methods are safe for concurrent use.
type Device struct {
	name string
	impl string
	log  *slog.Logger

	mu        sync.Mutex // serializes Set, Stats and Close; guards the fields below
	client    client
	closed    bool
	endpoints map[key.NodePublic]netip.AddrPort // per peer, the endpoint Set last asked for

	// Kernel implementation.
	nl   *nl.Handle
	link netlink.Link

	// Userspace implementation.
	dev      *device.Device
	uapi     net.Listener
	closing  atomic.Bool
	uapiDone chan struct{} // closed when the UAPI accept loop has returned
}

// Open creates the WireGuard interface opts.Name in the network namespace of the
// calling process, down and without addresses (datapath/route sets it up), and
// without configuration (see Set). It fails with ErrInUse if a live device answers on
// the name's UAPI socket, and removes the socket if it is stale. A kernel WireGuard
// link of that name, left by a previous run, is adopted (Set then fixes its
// configuration); a link of another type is an error. ModeAuto falls back to
// wireguard-go only when the kernel says it has no WireGuard, not on other errors.
func Open(opts Options) (*Device, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("interface", opts.Name)
	mtu := opts.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if err := claimSocket(SocketDir, opts.Name, log); err != nil {
		return nil, err
	}
	d := &Device{name: opts.Name, log: log, endpoints: map[key.NodePublic]netip.AddrPort{}}
	var err error
	switch opts.Mode {
	case ModeUserspace:
		err = d.startUserspace(mtu)
	case ModeKernel:
		err = d.startKernel(mtu)
	default:
		err = d.startKernel(mtu)
		if errors.Is(err, ErrKernelUnsupported) {
			log.Info("the kernel has no WireGuard; running wireguard-go in this process", "reason", err)
			err = d.startUserspace(mtu)
		}
	}
	if err != nil {
		return nil, err
	}
	// wgctrl looks for the kernel's generic netlink family when it is created, so it
	// is created after the link, which may have loaded the module.
	c, err := wgctrl.New()
	if err != nil {
		d.stop()
		return nil, fmt.Errorf("opening wgctrl for %s: %w", opts.Name, err)
	}
	d.client = c
	log.Info("WireGuard device open", "implementation", d.impl, "mtu", mtu)
	return d, nil
}

// startKernel creates (or adopts, after a crash) a kernel WireGuard link. The error
// wraps ErrKernelUnsupported if the kernel has no WireGuard.
func (d *Device) startKernel(mtu int) error {
	h, err := nl.Open()
	if err != nil {
		return err
	}
	err = h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: d.name, MTU: mtu}})
	adopted := false
	switch {
	case err == nil:
	case notSupported(err):
		h.Close()
		return fmt.Errorf("%w: %w", ErrKernelUnsupported, err)
	case errors.Is(err, unix.EEXIST):
		adopted = true
	default:
		h.Close()
		return err
	}
	link, err := h.LinkByName(d.name)
	if err != nil {
		h.Close()
		return err
	}
	if t := link.Type(); t != "wireguard" {
		h.Close()
		return fmt.Errorf("interface %s exists and is a %s link, not WireGuard", d.name, t)
	}
	if adopted {
		d.log.Info("adopting the kernel WireGuard link left by a previous run")
	}
	d.nl, d.link, d.impl = h, link, ImplKernel
	return nil
}

// notSupported reports whether err says that the kernel does not know the link type.
func notSupported(err error) bool {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "operation not supported") || strings.Contains(s, "Unknown device type")
}

// startUserspace runs wireguard-go on a new TUN device and serves its UAPI socket.
func (d *Device) startUserspace(mtu int) error {
	t, err := tun.CreateTUN(d.name, mtu)
	if err != nil {
		return fmt.Errorf("creating TUN device %s: %w", d.name, err)
	}
	if got, err := t.Name(); err != nil || got != d.name {
		t.Close()
		return fmt.Errorf("creating TUN device %s: the kernel named it %q (%v)", d.name, got, err)
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), wgLogger(d.log))
	f, err := ipc.UAPIOpen(d.name)
	if err != nil {
		dev.Close()
		return fmt.Errorf("opening UAPI socket for %s: %w", d.name, err)
	}
	l, err := ipc.UAPIListen(d.name, f)
	f.Close() // UAPIListen has its own copy of the descriptor.
	if err != nil {
		dev.Close()
		removeSocket(SocketDir, d.name)
		return fmt.Errorf("listening on UAPI socket for %s: %w", d.name, err)
	}
	d.dev, d.uapi, d.impl = dev, l, ImplUserspace
	d.uapiDone = make(chan struct{})
	go d.serveUAPI()
	return nil
}

// serveUAPI answers wgctrl (ours and `wg show`) until the listener closes.
func (d *Device) serveUAPI() {
	defer close(d.uapiDone)
	for {
		c, err := d.uapi.Accept()
		if err != nil {
			if !d.closing.Load() {
				d.log.Error("the UAPI socket stopped; the device can no longer be configured", "err", err)
			}
			return
		}
		go d.dev.IpcHandle(c)
	}
}

// wgLogger sends wireguard-go's log to log: its verbose lines at debug level, its
// errors (mostly transient send and handshake failures) as warnings.
func wgLogger(log *slog.Logger) *device.Logger {
	log = log.With("component", "wireguard-go")
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug(fmt.Sprintf(format, args...))
			}
		},
		Errorf: func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	}
}

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// Impl returns ImplKernel or ImplUserspace.
func (d *Device) Impl() string { return d.impl }

// Close removes the interface: it deletes the kernel link, or stops wireguard-go
// (which removes the TUN device) and its UAPI socket. It is safe to call more than once.
func (d *Device) Close() error { return d.close(true) }

// Release lets go of the device but leaves a kernel link in place, peers and all,
// so the overlay keeps working while the agent restarts (Open adopts the link
// again). wireguard-go lives in this process, so for it Release is Close.
func (d *Device) Release() error { return d.close(false) }

func (d *Device) close(deleteLink bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if !deleteLink && d.nl != nil {
		var err error
		if d.client != nil {
			err = d.client.Close()
		}
		d.nl.Close()
		d.log.Info("WireGuard device released; the kernel link stays")
		return err
	}
	var errs []error
	if d.client != nil {
		if err := d.client.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing wgctrl: %w", err))
		}
	}
	errs = append(errs, d.stop())
	d.log.Info("WireGuard device closed")
	return errors.Join(errs...)
}

// stop undoes start*.
func (d *Device) stop() error {
	var errs []error
	if d.nl != nil {
		if err := d.nl.LinkDel(d.link); err != nil {
			errs = append(errs, err)
		}
		d.nl.Close()
	}
	if d.dev != nil {
		d.closing.Store(true)
		// wireguard-go's listener closes itself when its socket file goes away; a
		// second close then reports os.ErrClosed, which is not a failure.
		if err := d.uapi.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("closing UAPI socket of %s: %w", d.name, err))
		}
		<-d.uapiDone
		d.dev.Close()
		if err := removeSocket(SocketDir, d.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func socketPath(dir, name string) string { return filepath.Join(dir, name+".sock") }

// claimSocket makes sure no live device uses name's UAPI socket in dir: it fails with
// ErrInUse if the socket answers, and removes it if it is stale.
func claimSocket(dir, name string, log *slog.Logger) error {
	path := socketPath(dir, name)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking UAPI socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another interface name", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s answers (names must be unique across network namespaces)", ErrInUse, path)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("checking UAPI socket: %w", err)
	}
	log.Info("removing the stale UAPI socket of a device that is gone", "path", path)
	return removeSocket(dir, name)
}

func removeSocket(dir, name string) error {
	if err := os.Remove(socketPath(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing UAPI socket: %w", err)
	}
	return nil
}
