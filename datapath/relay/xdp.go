package relay

import (
	"net/netip"
	"time"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// xstate is what the relay keeps about a live session's XDP entries. Guarded by
// Relay.mu.
type xstate struct {
	paths [2]*xdprelay.Path    // reverse path of each side's last bind; nil: unknown
	keys  [2]*xdprelay.Key     // the installed entry for traffic from each side; nil: none
	rws   [2]xdprelay.Rewrite  // and its rewrite
	base  [2]xdprelay.Counters // counters of that side's entries already deleted
}

// learnPath reads the reverse path the program recorded for side's bind.
func (r *Relay) learnPath(s *session.Session, side session.Side, xs *xstate) {
	ep, ok := s.Peer(side)
	if !ok {
		return
	}
	path, ok, err := r.xdp.Path(xdprelay.Key{Src: ep, Port: s.Port(side)})
	if err != nil {
		r.log.Warn("relay: reading a bind's path", "session", s.ID(), "side", side, "err", err)
	}
	if !ok {
		xs.paths[side] = nil // it came in where XDP is not attached: Go path
		return
	}
	xs.paths[side] = &path
}

// wantXDP returns the entries s should have: both or none.
func wantXDP(s *session.Session, xs *xstate) (keys [2]xdprelay.Key, rws [2]xdprelay.Rewrite, ok bool) {
	var eps [2]netip.AddrPort
	for side := range eps {
		ep, bound := s.Peer(session.Side(side))
		p := xs.paths[side]
		if !bound || !ep.Addr().Is4() || p == nil || !p.Local.Is4() {
			return keys, rws, false
		}
		eps[side] = ep
	}
	for side := range eps {
		other := session.Side(side).Other()
		p := xs.paths[other]
		keys[side] = xdprelay.Key{Src: eps[side], Port: s.Port(session.Side(side))}
		rws[side] = xdprelay.Rewrite{
			Src:     netip.AddrPortFrom(p.Local, s.Port(other)),
			Dst:     eps[other],
			Ifindex: p.Ifindex,
			SrcMAC:  p.LocalMAC,
			DstMAC:  p.PeerMAC,
		}
	}
	return keys, rws, true
}

// syncXDP makes s's entries what its bound endpoints and paths call for. Called with
// r.mu held.
func (r *Relay) syncXDP(s *session.Session, xs *xstate) {
	keys, rws, ok := wantXDP(s, xs)
	for side := range xs.keys {
		cur := xs.keys[side]
		if !ok {
			r.deleteEntry(s, xs, side)
			continue
		}
		if cur != nil && *cur == keys[side] && xs.rws[side] == rws[side] {
			continue
		}
		r.deleteEntry(s, xs, side)
		if err := r.xdp.Put(keys[side], rws[side]); err != nil {
			r.log.Warn("relay: writing an XDP entry; the Go path relays it", "session", s.ID(), "side", session.Side(side), "err", err)
			continue
		}
		k := keys[side]
		xs.keys[side], xs.rws[side] = &k, rws[side]
	}
	if ok && xs.keys[0] != nil && xs.keys[1] != nil {
		r.log.Debug("relay: session on XDP", "session", s.ID())
	}
}

// deleteEntry removes side's entry, keeping its counters in xs.base.
func (r *Relay) deleteEntry(s *session.Session, xs *xstate, side int) {
	k := xs.keys[side]
	if k == nil {
		return
	}
	xs.keys[side] = nil
	c, ok, err := r.xdp.Delete(*k)
	if err != nil {
		r.log.Warn("relay: deleting an XDP entry", "session", s.ID(), "err", err)
	}
	if ok {
		addCounters(&xs.base[side], c)
	}
}

func addCounters(dst *xdprelay.Counters, c xdprelay.Counters) {
	dst.Packets += c.Packets
	dst.Bytes += c.Bytes
	dst.LastSeen = max(dst.LastSeen, c.LastSeen)
}

// retireXDP deletes a removed session's entries and forgets it. Called with r.mu
// held.
func (r *Relay) retireXDP(s *session.Session) {
	xs := r.xs[s]
	delete(r.xs, s)
	if xs == nil || r.xdp == nil {
		return
	}
	for side := range xs.keys {
		r.deleteEntry(s, xs, side)
	}
}

// xdpCounters returns what XDP relayed for s from each side, deleted entries
// included, and whether both entries are installed. Called with r.mu held.
func (r *Relay) xdpCounters(s *session.Session, xs *xstate) (c [2]xdprelay.Counters, on bool) {
	on = r.xdp != nil
	for side := range xs.keys {
		c[side] = xs.base[side]
		if xs.keys[side] == nil {
			on = false
			continue
		}
		_, cur, ok, err := r.xdp.Lookup(*xs.keys[side])
		if err != nil || !ok {
			on = false
			continue
		}
		addCounters(&c[side], cur)
	}
	return c, on
}

// check rewrites evicted XDP entries and unbinds idle sessions. now and mono are
// the current time and CLOCK_MONOTONIC_COARSE (the XDP entries' clock).
func (r *Relay) check(now time.Time, mono time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, xs := range r.xs {
		last := s.LastSeen()
		if r.xdp != nil {
			for side, k := range xs.keys {
				if k == nil {
					continue
				}
				if _, _, ok, err := r.xdp.Lookup(*k); err == nil && !ok {
					// Evicted by the LRU: its traffic reached the Go path meanwhile.
					xs.keys[side] = nil
					r.log.Debug("relay: XDP entry evicted; rewriting it", "session", s.ID(), "side", session.Side(side))
				}
			}
			r.syncXDP(s, xs)
			c, _ := r.xdpCounters(s, xs)
			for _, sc := range c {
				if sc.LastSeen > 0 {
					if t := now.Add(sc.LastSeen - mono); t.After(last) {
						last = t
					}
				}
			}
		}
		_, boundA := s.Peer(session.SideA)
		_, boundB := s.Peer(session.SideB)
		if last.Before(s.LastSeen()) {
			last = s.LastSeen() // a bind since the loop started
		}
		if (boundA || boundB) && now.Sub(last) > r.opts.IdleTimeout {
			s.Unbind()
			xs.paths = [2]*xdprelay.Path{}
			if r.xdp != nil {
				r.syncXDP(s, xs)
			}
			r.expired.Add(1)
			r.log.Info("relay: idle session unbound", "session", s.ID(), "idle", now.Sub(last).Round(time.Second))
		}
	}
}
