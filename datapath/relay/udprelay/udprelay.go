package udprelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/cvlan/cvlan/datapath/relay/session"
)

// Defaults for Config.
const (
	DefaultBatchSize    = 64
	DefaultMaxPacket    = 4096
	DefaultSocketBuffer = 4 << 20
)

// Config configures a Server.
type Config struct {
	// Addr is the local address session sockets bind to. The zero Addr binds all
	// addresses, IPv4 and IPv6 (one dual-stack socket per port).
	Addr netip.Addr
	// BatchSize is the number of datagrams per recvmmsg and sendmmsg; zero is
	// DefaultBatchSize.
	BatchSize int
	// MaxPacket is the receive buffer per datagram; longer datagrams are dropped
	// (DropTooBig). Zero is DefaultMaxPacket.
	MaxPacket int
	// SocketBuffer is the SO_RCVBUF and SO_SNDBUF to ask for (the kernel caps it at
	// net.core.rmem_max and wmem_max); zero is DefaultSocketBuffer.
	SocketBuffer int
	// Counters receives the Go path's packet, byte and drop counts. Required.
	Counters *session.Counters
	// OnBind handles a bind packet that arrived on side's port of s from the
	// endpoint from, and returns the reply to send back to from, or nil. It is called
	// from the port's reader goroutine and must not wait for Server.Close.
	OnBind func(s *session.Session, side session.Side, pkt []byte, from netip.AddrPort) []byte
	// Logger receives warnings about socket errors; nil discards them.
	Logger *slog.Logger
}

// Server relays the sessions it has opened. Its methods are safe for concurrent
// use.
type Server struct {
	cfg  Config
	pool sync.Pool // of *batch

	mu       sync.Mutex
	sessions map[session.ID]*pair
	closed   bool
}

// pair is one open session: a socket per side and their readers.
type pair struct {
	s       *session.Session
	conns   [2]*conn
	readers sync.WaitGroup
}

// conn is one session port's socket.
type conn struct {
	uc *net.UDPConn
	rc syscall.RawConn
	pc batchConn
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// batch is the buffers of one ReadBatch and the messages that forward them.
type batch struct {
	in   []ipv4.Message
	out  []ipv4.Message
	bufs [][]byte
}

// ErrClosed is returned by Open after Close.
var ErrClosed = errors.New("udprelay: server closed")

// New returns a Server with no sessions.
func New(cfg Config) *Server {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.MaxPacket <= 0 {
		cfg.MaxPacket = DefaultMaxPacket
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = DefaultSocketBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Counters == nil {
		panic("udprelay: Config.Counters is nil")
	}
	sv := &Server{cfg: cfg, sessions: map[session.ID]*pair{}}
	sv.pool.New = func() any {
		b := &batch{
			in:   make([]ipv4.Message, cfg.BatchSize),
			out:  make([]ipv4.Message, cfg.BatchSize),
			bufs: make([][]byte, cfg.BatchSize),
		}
		for i := range b.in {
			b.bufs[i] = make([]byte, cfg.MaxPacket)
			b.in[i].Buffers = [][]byte{b.bufs[i]}
			b.out[i].Buffers = make([][]byte, 1)
		}
		return b
	}
	return sv
}

// Open opens both ports of s and starts relaying. It fails if a port cannot be bound
// (in use) or s is already open.
func (sv *Server) Open(s *session.Session) error {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.closed {
		return ErrClosed
	}
	if _, ok := sv.sessions[s.ID()]; ok {
		return fmt.Errorf("opening session %s: already open", s.ID())
	}
	p := &pair{s: s}
	for _, side := range []session.Side{session.SideA, session.SideB} {
		c, err := sv.listen(s.Port(side))
		if err != nil {
			if side == session.SideB {
				p.conns[session.SideA].uc.Close()
			}
			return fmt.Errorf("opening session %s side %s: %w", s.ID(), side, err)
		}
		p.conns[side] = c
	}
	sv.sessions[s.ID()] = p
	for _, side := range []session.Side{session.SideA, session.SideB} {
		p.readers.Add(1)
		go sv.read(p, side)
	}
	return nil
}

func (sv *Server) listen(port uint16) (*conn, error) {
	network, ip := "udp", net.IP(nil)
	switch a := sv.cfg.Addr.Unmap(); {
	case a.Is4():
		network, ip = "udp4", a.AsSlice()
	case a.Is6():
		network, ip = "udp6", a.AsSlice()
	}
	uc, err := net.ListenUDP(network, &net.UDPAddr{IP: ip, Port: int(port), Zone: sv.cfg.Addr.Zone()})
	if err != nil {
		return nil, fmt.Errorf("listening on UDP port %d: %w", port, err)
	}
	// Best effort: the kernel caps the sizes at its limits.
	_ = uc.SetReadBuffer(sv.cfg.SocketBuffer)
	_ = uc.SetWriteBuffer(sv.cfg.SocketBuffer)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("UDP port %d: %w", port, err)
	}
	c := &conn{uc: uc, rc: rc}
	if network == "udp4" {
		c.pc = ipv4.NewPacketConn(uc)
	} else {
		c.pc = ipv6.NewPacketConn(uc)
	}
	return c, nil
}

// Close stops relaying session id and closes its ports; it waits for its readers to
// return. Closing a session that is not open does nothing.
func (sv *Server) Close(id session.ID) error {
	sv.mu.Lock()
	p := sv.sessions[id]
	delete(sv.sessions, id)
	sv.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.close()
}

func (p *pair) close() error {
	var errs []error
	for side, c := range p.conns {
		if err := c.uc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing session %s side %s: %w", p.s.ID(), session.Side(side), err))
		}
	}
	p.readers.Wait()
	return errors.Join(errs...)
}

// CloseAll closes every session; Open fails afterwards.
func (sv *Server) CloseAll() error {
	sv.mu.Lock()
	sv.closed = true
	ps := sv.sessions
	sv.sessions = map[session.ID]*pair{}
	sv.mu.Unlock()
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.close())
	}
	return errors.Join(errs...)
}

// IsOpen reports whether session id is open.
func (sv *Server) IsOpen(id session.ID) bool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	_, ok := sv.sessions[id]
	return ok
}

// read is side's reader: it waits for datagrams, then drains the socket in batches.
func (sv *Server) read(p *pair, side session.Side) {
	defer p.readers.Done()
	c := p.conns[side]
	for {
		b := sv.pool.Get().(*batch)
		n, err := c.pc.ReadBatch(b.in, unix.MSG_DONTWAIT)
		if err != nil {
			sv.pool.Put(b)
			switch {
			case errors.Is(err, syscall.EAGAIN):
				if err := c.waitReadable(); err != nil {
					return // closed
				}
			case errors.Is(err, net.ErrClosed):
				return
			default:
				sv.cfg.Logger.Warn("relay: reading a session port", "session", p.s.ID(), "side", side, "err", err)
				if err := c.waitReadable(); err != nil {
					return
				}
			}
			continue
		}
		sv.handle(p, side, b, n)
		sv.pool.Put(b)
	}
}

// waitReadable blocks until the socket is readable or closed, without buffers.
//
// RawConn.Read clears the poller's pending readiness before it first calls the
// function, so the first call must look for queued datagrams itself (a zero-timeout
// poll): one that arrived between the last empty read and now raised its edge
// already and would otherwise never wake the reader.
func (c *conn) waitReadable() error {
	waited := false
	return c.rc.Read(func(fd uintptr) bool {
		if waited {
			return true
		}
		waited = true
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err != nil || n > 0 // on an error, let the next read report it
	})
}

// handle relays or dispatches the n datagrams of b that arrived on side's port.
func (sv *Server) handle(p *pair, side session.Side, b *batch, n int) {
	cnt := sv.cfg.Counters
	own, ownOK := p.s.Peer(side)
	dst, dstOK := p.s.Peer(side.Other())
	var dstAddr *net.UDPAddr
	k := 0
	for i := range n {
		m := &b.in[i]
		from := addrPort(m.Addr)
		if m.Flags&unix.MSG_TRUNC != 0 {
			cnt.Drop(session.DropTooBig)
			continue
		}
		payload := b.bufs[i][:m.N]
		if session.IsBind(payload) {
			if reply := sv.cfg.OnBind(p.s, side, payload, from); reply != nil {
				if _, err := p.conns[side].uc.WriteToUDPAddrPort(reply, from); err != nil {
					sv.cfg.Logger.Warn("relay: answering a bind", "session", p.s.ID(), "side", side, "to", from, "err", err)
				}
			}
			own, ownOK = p.s.Peer(side)
			if d, ok := p.s.Peer(side.Other()); ok != dstOK || d != dst {
				dst, dstOK, dstAddr = d, ok, nil
			}
			continue
		}
		if !ownOK || own != from {
			cnt.Drop(session.DropNotBound)
			continue
		}
		if !dstOK {
			cnt.Drop(session.DropPeerNotBound)
			continue
		}
		if dstAddr == nil {
			dstAddr = net.UDPAddrFromAddrPort(dst)
		}
		b.out[k].Buffers[0] = payload
		b.out[k].Addr = dstAddr
		k++
	}
	if k == 0 {
		return
	}
	sent := sv.write(p, side.Other(), b.out[:k])
	var bytes uint64
	for i := range sent {
		bytes += uint64(len(b.out[i].Buffers[0]))
	}
	cnt.Packets.Add(uint64(sent))
	cnt.Bytes.Add(bytes)
	p.s.Counted(side, uint64(sent), bytes, time.Now())
}

// write sends ms from side's socket and returns how many were sent; the rest are
// counted as send errors.
func (sv *Server) write(p *pair, side session.Side, ms []ipv4.Message) int {
	sent := 0
	for sent < len(ms) {
		n, err := p.conns[side].pc.WriteBatch(ms[sent:], 0)
		sent += n
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				sv.cfg.Logger.Warn("relay: sending relayed data", "session", p.s.ID(), "side", side, "err", err)
			}
			for range len(ms) - sent {
				sv.cfg.Counters.Drop(session.DropSendError)
			}
			return sent
		}
	}
	return sent
}

// addrPort returns a received datagram's source with an unmapped address.
func addrPort(a net.Addr) netip.AddrPort {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
