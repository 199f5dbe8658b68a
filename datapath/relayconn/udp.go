package relayconn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cvlan/cvlan/datapath/relay/session"
)

const (
	// ackWindow is how many of the last bind counters an ack may answer: an ack
	// can arrive after the next retry went out.
	ackWindow = 4
	// maxMisses is how many binds in a row may go unanswered before the path no
	// longer counts as bound.
	maxMisses = 3
	// stallRetries is, in BindRetry intervals, how long the path may send without
	// receiving anything before it binds again (a restarted relay forgot it).
	stallRetries = 5
)

// udpPath carries a peer's packets over a UDP relay session. One socket, connected
// to the relay, carries both the bind packets and the WireGuard packets, so the
// relay learns the NAT mapping the WireGuard packets use.
type udpPath struct {
	p     *peer
	cfg   Path
	conn  *net.UDPConn
	epoch time.Time // the times below are durations since epoch (monotonic)

	lastTx, lastRx atomic.Int64
	quit           chan struct{}
	wg             sync.WaitGroup
	stopOnce       sync.Once

	mu        sync.Mutex
	sent      [ackWindow]uint64 // the last bind counters, a ring
	nsent     int
	lastBind  time.Duration // when the last bind was sent
	lastAck   time.Duration // when the last valid ack arrived; 0 before the first
	bound     bool
	peerBound bool
	misses    int  // binds in a row not acked within BindRetry
	kicked    bool // bind at the next tick: the relay looked unreachable
}

// newUDPPath opens the path's socket to the relay; start starts it.
func newUDPPath(p *peer, pa *Path) (*udpPath, error) {
	relay := netip.AddrPortFrom(pa.Relay.Addr().Unmap(), pa.Relay.Port())
	network := "udp6"
	if relay.Addr().Is4() {
		network = "udp4"
	}
	conn, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(relay))
	if err != nil {
		return nil, fmt.Errorf("opening a UDP socket to relay %s: %w", relay, err)
	}
	return &udpPath{p: p, cfg: *pa, conn: conn, epoch: time.Now(), quit: make(chan struct{})}, nil
}

func (u *udpPath) path() *Path { return &u.cfg }

func (u *udpPath) now() time.Duration { return time.Since(u.epoch) }

func (u *udpPath) start() {
	u.wg.Add(2)
	go u.readLoop()
	go u.bindLoop()
}

func (u *udpPath) stop() {
	u.stopOnce.Do(func() {
		close(u.quit)
		u.conn.Close()
		u.wg.Wait()
	})
}

func (u *udpPath) status(st *PeerStatus) {
	u.mu.Lock()
	defer u.mu.Unlock()
	st.Bound, st.PeerBound = u.bound, u.peerBound
	if u.bound {
		st.Transport = "udp"
	}
}

func (u *udpPath) send(pkt []byte) {
	if _, err := u.conn.Write(pkt); err != nil {
		u.p.px.m.drop(dropSendError)
		u.failed(fmt.Errorf("sending to relay %s: %w", u.cfg.Relay, err))
		return
	}
	u.lastTx.Store(int64(u.now()))
	u.p.sent(pathUDP, len(pkt))
}

// failed records a socket error. ECONNREFUSED is the ICMP port unreachable of a
// relay that is down or restarting: bind at the next tick.
func (u *udpPath) failed(err error) {
	if errors.Is(err, net.ErrClosed) {
		return
	}
	u.p.lastErr.set(err)
	if errors.Is(err, syscall.ECONNREFUSED) {
		u.mu.Lock()
		u.kicked = true
		u.mu.Unlock()
	}
}

// readLoop carries datagrams from the relay to WireGuard and hands acks to
// handleAck, until the socket closes.
func (u *udpPath) readLoop() {
	defer u.wg.Done()
	buf := make([]byte, maxPacket)
	for {
		n, err := u.conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			u.failed(fmt.Errorf("receiving from relay %s: %w", u.cfg.Relay, err))
			if !errors.Is(err, syscall.ECONNREFUSED) {
				select { // never spin on a persistent error
				case <-u.quit:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			continue
		}
		pkt := buf[:n]
		if session.IsBind(pkt) {
			u.handleAck(pkt)
			continue
		}
		u.lastRx.Store(int64(u.now()))
		u.p.deliver(pkt, pathUDP)
	}
}

// verifyAck reports whether b is an ack of the relay for path pa: it parses, names
// pa's session and side, and carries a valid MAC under pa's token. It returns the
// message so the caller can check the counter.
func verifyAck(b []byte, pa *Path) (session.Message, bool) {
	m, err := session.Parse(b)
	if err != nil || m.Type != session.TypeAck || m.Session != pa.Session || m.Side != pa.Side {
		return session.Message{}, false
	}
	if !session.Verify(b, &pa.Token) {
		return session.Message{}, false
	}
	return m, true
}

// handleAck takes an ack of one of the recent binds; anything else starting with
// the bind magic is counted and dropped.
func (u *udpPath) handleAck(b []byte) {
	m, ok := verifyAck(b, &u.cfg)
	if !ok {
		u.p.px.m.drop(dropInvalidAck)
		return
	}
	u.mu.Lock()
	match := false
	for i := range min(u.nsent, ackWindow) {
		match = match || u.sent[i] == m.Counter
	}
	if !match {
		u.mu.Unlock()
		u.p.px.m.drop(dropInvalidAck)
		return
	}
	wasBound, wasPeerBound := u.bound, u.peerBound
	u.lastAck = u.now()
	u.bound, u.peerBound = true, m.Flags&session.FlagPeerBound != 0
	u.misses = 0
	peerBound := u.peerBound
	u.mu.Unlock()
	u.p.px.m.acks.Add(1)
	if !wasBound || wasPeerBound != peerBound {
		u.p.px.log.Info("relay proxy: bound to relay", "peer", u.p.key, "relay", u.cfg.Relay,
			"session", u.cfg.Session, "side", u.cfg.Side, "peer_bound", peerBound)
	}
}

// bindLoop binds at once, then decides every BindRetry whether to bind again.
func (u *udpPath) bindLoop() {
	defer u.wg.Done()
	retry := u.p.px.cfg.BindRetry
	t := time.NewTicker(retry)
	defer t.Stop()
	u.bind()
	for {
		select {
		case <-u.quit:
			return
		case <-t.C:
			if u.due() {
				u.bind()
			}
		}
	}
}

// due reports whether to bind now: fast retries until the relay acked a bind
// with both sides bound, and after a bind went unanswered, after a socket error or
// while the path sends but receives nothing (a relay that restarted drops our
// packets until we bind again); otherwise every BindRefresh.
func (u *udpPath) due() bool {
	cfg := &u.p.px.cfg
	now := u.now()
	u.mu.Lock()
	defer u.mu.Unlock()
	since := now - u.lastBind
	// The ticker runs every BindRetry; allow for its jitter.
	retried := since >= cfg.BindRetry*3/4
	if u.lastAck < u.lastBind && retried {
		u.misses++
		if u.misses >= maxMisses && u.bound {
			u.bound, u.peerBound = false, false
			u.p.px.log.Warn("relay proxy: relay stopped acking binds", "peer", u.p.key, "relay", u.cfg.Relay,
				"session", u.cfg.Session, "side", u.cfg.Side)
		}
		return true
	}
	if u.kicked {
		u.kicked = false
		return true
	}
	if !u.peerBound {
		return retried
	}
	if since >= cfg.BindRefresh {
		return true
	}
	stall := time.Duration(stallRetries) * cfg.BindRetry
	tx, rx := time.Duration(u.lastTx.Load()), time.Duration(u.lastRx.Load())
	return tx-rx >= stall && since >= stall
}

// bind sends a bind packet.
func (u *udpPath) bind() {
	c := u.p.px.nextCounter()
	b := session.Message{Type: session.TypeBind, Side: u.cfg.Side, Session: u.cfg.Session, Counter: c}.Append(make([]byte, 0, session.Size), &u.cfg.Token)
	u.mu.Lock()
	u.sent[u.nsent%ackWindow] = c
	u.nsent++
	u.lastBind = u.now()
	u.mu.Unlock()
	if _, err := u.conn.Write(b); err != nil {
		u.failed(fmt.Errorf("sending a bind to relay %s: %w", u.cfg.Relay, err))
		return
	}
	u.p.px.m.binds.Add(1)
}
