package xdprelay

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrNotSupported is wrapped by Load and Attach errors when the kernel (or the
// process's privileges) cannot run the program at all.
var ErrNotSupported = errors.New("XDP relay not supported here")

// DefaultMaxEntries is the size of the sessions map when Options leave it zero: two
// entries per bound session.
const DefaultMaxEntries = 65536

// Options tune Load.
type Options struct {
	// MaxEntries is the sessions map's size (two per session); zero is
	// DefaultMaxEntries. The map is an LRU: when it is full the kernel evicts the
	// least recently used entry, whose traffic then takes the Go path until the
	// relay writes it again.
	MaxEntries uint32
}

// Program is the loaded relay program and its maps, attached to zero or more
// interfaces. Its methods are safe for concurrent use.
type Program struct {
	objs relayObjects

	mu    sync.Mutex
	links []attached
}

type attached struct {
	Attachment
	link link.Link
}

// Attachment says where and how the program is attached.
type Attachment struct {
	Interface string
	Ifindex   int
	Mode      Mode // ModeNative or ModeGeneric
}

// Load loads the program and creates its maps. The caller must Close it.
func Load(opts Options) (*Program, error) {
	spec, err := loadRelay()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded relay program: %w", err)
	}
	if opts.MaxEntries != 0 {
		spec.Maps[relayMapSessions].MaxEntries = opts.MaxEntries
	}
	p := &Program{}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%w: loading the relay program: %w", ErrNotSupported, err)
		}
		return nil, fmt.Errorf("loading the relay program: %w", err)
	}
	return p, nil
}

// Attach attaches the program to the named interface in mode: ModeNative or
// ModeGeneric, or ModeAuto for native with a fallback to generic.
func (p *Program) Attach(iface string, mode Mode) (Attachment, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return Attachment{}, fmt.Errorf("attaching the relay program: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.links {
		if l.Ifindex == ifi.Index {
			return Attachment{}, fmt.Errorf("attaching the relay program to %s: already attached", iface)
		}
	}
	var tries []Mode
	switch mode {
	case ModeAuto, "":
		tries = []Mode{ModeNative, ModeGeneric}
	case ModeNative, ModeGeneric:
		tries = []Mode{mode}
	default:
		return Attachment{}, fmt.Errorf("attaching the relay program to %s: mode %q", iface, mode)
	}
	var errs []error
	for _, m := range tries {
		flags := link.XDPDriverMode
		if m == ModeGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: p.objs.RelayXdp, Interface: ifi.Index, Flags: flags})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s mode: %w", m, err))
			continue
		}
		a := Attachment{Interface: iface, Ifindex: ifi.Index, Mode: m}
		p.links = append(p.links, attached{a, l})
		return a, nil
	}
	return Attachment{}, fmt.Errorf("attaching the relay program to %s: %w", iface, errors.Join(errs...))
}

// Attachments returns where the program is attached.
func (p *Program) Attachments() []Attachment {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Attachment, len(p.links))
	for i, l := range p.links {
		out[i] = l.Attachment
	}
	return out
}

// Close detaches the program from every interface and frees it and its maps.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, l := range p.links {
		if err := l.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detaching the relay program from %s: %w", l.Interface, err))
		}
	}
	p.links = nil
	if err := p.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the relay program: %w", err))
	}
	return errors.Join(errs...)
}

// XDP returns the program itself, for tests that run it with [ebpf.Program.Run].
func (p *Program) XDP() *ebpf.Program { return p.objs.RelayXdp }
