package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/udprelay"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// Defaults for Options.
const (
	DefaultIdleTimeout   = 3 * time.Minute
	DefaultCheckInterval = 10 * time.Second
)

// ErrNoChanges is returned by Set when the relay already serves exactly the given
// sessions.
var ErrNoChanges = session.ErrNoChanges

// Options configure a Relay. The zero value is valid: XDP auto on no interfaces
// (so the Go path alone), sockets on all addresses.
type Options struct {
	// XDP says whether and how to attach the fast path: auto, native, generic, off.
	XDP xdprelay.Mode
	// Interfaces are where the XDP program is attached: every interface peers'
	// traffic may arrive on. Native and generic modes require at least one.
	Interfaces []string
	// Addr is the local address session ports are bound to; the zero Addr binds all
	// addresses (IPv4 and IPv6).
	Addr netip.Addr
	// IdleTimeout unbinds sessions without traffic or binds for this long; zero is
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// CheckInterval is how often idle sessions and evicted XDP entries are looked
	// for; zero is DefaultCheckInterval.
	CheckInterval time.Duration
	// MaxEntries sizes the XDP map (two entries per bound session); zero is
	// xdprelay.DefaultMaxEntries.
	MaxEntries uint32
	// BatchSize and MaxPacket tune the Go path (udprelay.Config); zero is the
	// default.
	BatchSize, MaxPacket int
	// Logger receives the relay's logs; nil discards them.
	Logger *slog.Logger
}

// Validate checks the options.
func (o *Options) Validate() error {
	if _, err := xdprelay.ParseMode(string(o.XDP)); err != nil {
		return err
	}
	if (o.XDP == xdprelay.ModeNative || o.XDP == xdprelay.ModeGeneric) && len(o.Interfaces) == 0 {
		return fmt.Errorf("XDP mode %s needs at least one interface", o.XDP)
	}
	if o.IdleTimeout < 0 || o.CheckInterval < 0 {
		return errors.New("negative idle timeout or check interval")
	}
	return nil
}

// Relay serves relay sessions. Its methods are safe for concurrent use.
type Relay struct {
	opts  Options
	log   *slog.Logger
	table *session.Table
	udp   *udprelay.Server
	xdp   *xdprelay.Program // nil when only the Go path runs
	goCnt session.Counters

	setMu sync.Mutex // serializes Set and Close

	mu      sync.Mutex // guards xs and every change to XDP entries
	xs      map[*session.Session]*xstate
	closed  bool
	expired atomic.Uint64

	stop chan struct{}
	done chan struct{}
}

// New starts a relay with no sessions. It loads and attaches the XDP program as
// Options.XDP says; it must run in the network namespace of the interfaces and
// addresses it serves (so must Set, which opens sockets).
func New(opts Options) (*Relay, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("relay options: %w", err)
	}
	if opts.XDP == "" {
		opts.XDP = xdprelay.ModeAuto
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	r := &Relay{
		opts:  opts,
		log:   opts.Logger,
		table: session.NewTable(),
		xs:    map[*session.Session]*xstate{},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if err := r.startXDP(); err != nil {
		return nil, err
	}
	r.udp = udprelay.New(udprelay.Config{
		Addr: opts.Addr, BatchSize: opts.BatchSize, MaxPacket: opts.MaxPacket,
		Counters: &r.goCnt, OnBind: r.onBind, Logger: r.log,
	})
	go r.loop()
	return r, nil
}

// startXDP loads and attaches the program according to the mode.
func (r *Relay) startXDP() error {
	mode := r.opts.XDP
	if mode == xdprelay.ModeOff || (mode == xdprelay.ModeAuto && len(r.opts.Interfaces) == 0) {
		r.log.Info("relay: XDP off; the Go path relays everything", "mode", mode)
		return nil
	}
	prog, err := xdprelay.Load(xdprelay.Options{MaxEntries: r.opts.MaxEntries})
	if err != nil {
		if mode == xdprelay.ModeAuto {
			r.log.Warn("relay: XDP unavailable; the Go path relays everything", "err", err)
			return nil
		}
		return fmt.Errorf("starting the XDP relay: %w", err)
	}
	for _, ifc := range r.opts.Interfaces {
		a, err := prog.Attach(ifc, mode)
		if err != nil {
			if mode == xdprelay.ModeAuto {
				r.log.Warn("relay: XDP not attached; the Go path relays traffic of this interface", "interface", ifc, "err", err)
				continue
			}
			prog.Close()
			return fmt.Errorf("starting the XDP relay: %w", err)
		}
		r.log.Info("relay: XDP attached", "interface", a.Interface, "mode", a.Mode)
	}
	if len(prog.Attachments()) == 0 {
		prog.Close()
		r.log.Warn("relay: XDP attached nowhere; the Go path relays everything")
		return nil
	}
	r.xdp = prog
	return nil
}

// XDP returns where the fast path is attached; empty when only the Go path runs.
func (r *Relay) XDP() []xdprelay.Attachment {
	if r.xdp == nil {
		return nil
	}
	return r.xdp.Attachments()
}

// Set makes the relay serve exactly the given sessions: it opens the ports of new
// ones, closes those of removed ones and keeps the state (bound endpoints, counters)
// of unchanged ones. A session whose spec changed is replaced. It returns
// ErrNoChanges if there is nothing to do, an error changing nothing if the specs are
// invalid (session.ErrInvalidSpec), and otherwise applies all it can, returning the
// sessions it could not open (their ports in use, say) as an error; a later Set
// retries them.
func (r *Relay) Set(specs []session.Spec) error {
	r.setMu.Lock()
	defer r.setMu.Unlock()
	if r.isClosed() {
		return errors.New("relay closed")
	}
	ch, err := r.table.Diff(specs, time.Now())
	if err != nil {
		return err
	}
	// Retire removed sessions first: their ports may be reused by new ones.
	r.mu.Lock()
	r.table.Apply(ch.Remove, nil)
	for _, s := range ch.Remove {
		r.retireXDP(s)
	}
	r.mu.Unlock()
	var errs []error
	for _, s := range ch.Remove {
		if err := r.udp.Close(s.ID()); err != nil {
			errs = append(errs, err)
		}
		r.log.Info("relay: session removed", "session", s.ID())
	}
	var added []*session.Session
	for _, s := range ch.Add {
		r.mu.Lock()
		r.xs[s] = &xstate{}
		r.mu.Unlock()
		if err := r.udp.Open(s); err != nil {
			r.mu.Lock()
			delete(r.xs, s)
			r.mu.Unlock()
			errs = append(errs, err)
			continue
		}
		added = append(added, s)
		r.log.Info("relay: session added", "session", s.ID(), "port_a", s.Port(session.SideA), "port_b", s.Port(session.SideB))
	}
	r.table.Apply(nil, added)
	return errors.Join(errs...)
}

func (r *Relay) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// onBind is the control path: udprelay calls it for every bind packet.
func (r *Relay) onBind(s *session.Session, side session.Side, pkt []byte, from netip.AddrPort) []byte {
	res, err := s.Bind(side, pkt, from, time.Now())
	if err != nil {
		r.goCnt.Drop(session.Reason(err))
		r.log.Debug("relay: bind refused", "session", s.ID(), "side", side, "from", from, "err", err)
		return nil
	}
	r.goCnt.Binds.Add(1)
	if res.Moved {
		r.log.Info("relay: side bound", "session", s.ID(), "side", side, "endpoint", from,
			"previous", res.Previous, "active", res.Active)
	}
	if r.xdp != nil {
		r.mu.Lock()
		if xs := r.xs[s]; xs != nil {
			r.learnPath(s, side, xs)
			r.syncXDP(s, xs)
		}
		r.mu.Unlock()
	}
	return res.Ack
}

// Close stops relaying: it closes every session port and detaches the XDP program.
func (r *Relay) Close() error {
	r.setMu.Lock()
	defer r.setMu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	errs := []error{r.udp.CloseAll()}
	if r.xdp != nil {
		errs = append(errs, r.xdp.Close())
	}
	return errors.Join(errs...)
}

// loop runs the periodic check until Close.
func (r *Relay) loop() {
	defer close(r.done)
	t := time.NewTicker(r.opts.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			var mono time.Duration
			if r.xdp != nil {
				mono = xdprelay.Monotonic()
			}
			r.check(time.Now(), mono)
		}
	}
}
