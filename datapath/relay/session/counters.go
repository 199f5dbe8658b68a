package session

import (
	"errors"
	"sync/atomic"
)

// DropReason says why the relay's Go path dropped a packet.
type DropReason uint8

// Drop reasons. Bind packets are dropped for the first five; data for the rest.
const (
	DropMalformed      DropReason = iota // a bind packet that does not parse
	DropBadMAC                           // a bind whose MAC does not verify
	DropReplay                           // a bind whose counter is not newer
	DropUnknownSession                   // a bind naming another session than its port's
	DropWrongSide                        // a bind naming the other side than its port's
	DropNotBound                         // data from an address that is not bound to the port
	DropPeerNotBound                     // data from a bound side while the other is not
	DropTooBig                           // data larger than the receive buffer
	DropSendError                        // the kernel refused to send relayed data
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	DropMalformed:      "malformed",
	DropBadMAC:         "bad_mac",
	DropReplay:         "replay",
	DropUnknownSession: "unknown_session",
	DropWrongSide:      "wrong_side",
	DropNotBound:       "not_bound",
	DropPeerNotBound:   "peer_not_bound",
	DropTooBig:         "too_big",
	DropSendError:      "send_error",
}

// String returns the reason as a metric label value.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// Reason maps an error of [Parse] or [Session.Bind] to its drop reason.
func Reason(err error) DropReason {
	switch {
	case errors.Is(err, ErrBadMAC):
		return DropBadMAC
	case errors.Is(err, ErrReplay):
		return DropReplay
	case errors.Is(err, ErrUnknownSession):
		return DropUnknownSession
	case errors.Is(err, ErrWrongSide):
		return DropWrongSide
	}
	return DropMalformed
}

// Counters count what one path of the relay did. All fields are safe for concurrent
// use.
type Counters struct {
	Packets atomic.Uint64 // relayed data packets
	Bytes   atomic.Uint64 // relayed UDP payload bytes
	Binds   atomic.Uint64 // accepted bind packets
	Drops   [NumDropReasons]atomic.Uint64
}

// Drop counts one packet dropped for r.
func (c *Counters) Drop(r DropReason) {
	if r < NumDropReasons {
		c.Drops[r].Add(1)
	}
}
