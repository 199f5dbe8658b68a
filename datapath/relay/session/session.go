package session

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one session's live state: its spec, each side's learned endpoint and
// last accepted counter, and what the Go path relayed for it. Endpoints are read
// without locks on the packet path; binds are serialized by a mutex.
type Session struct {
	spec Spec

	mu   sync.Mutex // serializes Bind and Unbind
	last [2]uint64  // last accepted counter per side; never lowered

	peer     [2]atomic.Pointer[netip.AddrPort] // learned endpoint per side; nil: unbound
	lastSeen atomic.Int64                      // Unix ns of the last accepted bind or Go-relayed packet
	packets  [2]atomic.Uint64                  // Go-relayed packets from each side
	bytes    [2]atomic.Uint64                  // and their UDP payload bytes
}

// New returns the state of a session that has no side bound yet. The spec must be
// valid ([Spec.Validate]).
func New(spec Spec, now time.Time) *Session {
	s := &Session{spec: spec}
	s.lastSeen.Store(now.UnixNano())
	return s
}

// Spec returns the session as the controller issued it.
func (s *Session) Spec() Spec { return s.spec }

// ID returns the session id.
func (s *Session) ID() ID { return s.spec.ID }

// Port returns side's port.
func (s *Session) Port(side Side) uint16 { return s.spec.Ports[side] }

// Peer returns side's learned endpoint (an unmapped address), if it is bound.
func (s *Session) Peer(side Side) (netip.AddrPort, bool) {
	if p := s.peer[side].Load(); p != nil {
		return *p, true
	}
	return netip.AddrPort{}, false
}

// Active reports whether both sides are bound.
func (s *Session) Active() bool {
	return s.peer[SideA].Load() != nil && s.peer[SideB].Load() != nil
}

// BindResult is what an accepted bind changed.
type BindResult struct {
	Msg      Message        // the accepted bind
	Moved    bool           // the side was unbound or bound to another endpoint before
	Previous netip.AddrPort // the endpoint it was bound to before, if any
	Active   bool           // both sides are bound now
	Ack      []byte         // the ack to send back to the side's endpoint
}

// Bind handles pkt, a bind packet that arrived on side's port from the endpoint
// from. If it is valid, from becomes side's endpoint and Bind returns the ack to send
// back; otherwise it returns one of the package's errors and changes nothing.
func (s *Session) Bind(side Side, pkt []byte, from netip.AddrPort, now time.Time) (BindResult, error) {
	m, err := Parse(pkt)
	if err != nil {
		return BindResult{}, err
	}
	switch {
	case m.Type != TypeBind:
		return BindResult{}, ErrType
	case m.Session != s.spec.ID:
		return BindResult{}, ErrUnknownSession
	case m.Side != side:
		return BindResult{}, ErrWrongSide
	case !Verify(pkt, &s.spec.Tokens[side]):
		return BindResult{}, ErrBadMAC
	}
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())

	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Counter <= s.last[side] {
		return BindResult{}, ErrReplay
	}
	s.last[side] = m.Counter
	res := BindResult{Msg: m}
	if prev := s.peer[side].Load(); prev == nil || *prev != from {
		res.Moved = true
		if prev != nil {
			res.Previous = *prev
		}
		s.peer[side].Store(&from)
	}
	s.lastSeen.Store(now.UnixNano())
	res.Active = s.peer[side.Other()].Load() != nil
	ack := Message{Type: TypeAck, Side: side, Session: s.spec.ID, Counter: m.Counter}
	if res.Active {
		ack.Flags = FlagPeerBound
	}
	res.Ack = ack.Append(make([]byte, 0, Size), &s.spec.Tokens[side])
	return res, nil
}

// Unbind forgets both sides' endpoints (the relay does so when the session has been
// idle too long); the last accepted counters stay, so old binds cannot be replayed.
func (s *Session) Unbind() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peer[SideA].Store(nil)
	s.peer[SideB].Store(nil)
}

// Counted adds n packets of bytes payload bytes relayed by the Go path from side.
func (s *Session) Counted(side Side, n, bytes uint64, now time.Time) {
	s.packets[side].Add(n)
	s.bytes[side].Add(bytes)
	s.lastSeen.Store(now.UnixNano())
}

// GoCounters returns the packets and bytes the Go path relayed from side.
func (s *Session) GoCounters(side Side) (packets, bytes uint64) {
	return s.packets[side].Load(), s.bytes[side].Load()
}

// LastSeen returns the time of the last accepted bind or Go-relayed packet, or the
// session's creation if there was none.
func (s *Session) LastSeen() time.Time { return time.Unix(0, s.lastSeen.Load()) }
