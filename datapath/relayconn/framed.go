package relayconn

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/relay/framed"
)

// clientID names the relay client of a framed path: one per relay key and URL list.
func clientID(pa *Path) string {
	return pa.RelayKey.String() + "\n" + strings.Join(pa.URLs, "\n")
}

// relayClient is one connection to a framed relay, shared by every peer reached
// through it. Its goroutine dials the URLs in order, with backoff, receives until
// the connection fails, and dials again, until close.
type relayClient struct {
	px       *Proxy
	relayKey key.RelayPublic
	urls     []string

	cancel context.CancelFunc
	done   chan struct{} // closed when run returns; nil before start

	cur   atomic.Pointer[framed.Client]            // the connected client, or nil
	peers atomic.Pointer[map[key.NodePublic]*peer] // dispatch by source node key
	mu    sync.Mutex                               // orders close against storing cur
	dead  bool                                     // closed; guarded by mu
}

func newRelayClient(px *Proxy, pa *Path) *relayClient {
	return &relayClient{px: px, relayKey: pa.RelayKey, urls: pa.URLs}
}

// setPeers replaces the peers whose packets the client dispatches.
func (rc *relayClient) setPeers(m map[key.NodePublic]*peer) {
	rc.peers.Store(&m)
}

func (rc *relayClient) peer(k key.NodePublic) *peer {
	if m := rc.peers.Load(); m != nil {
		return (*m)[k]
	}
	return nil
}

// setErr records err as the last error of every peer of the client.
func (rc *relayClient) setErr(err error) {
	if m := rc.peers.Load(); m != nil {
		for _, p := range *m {
			p.lastErr.set(err)
		}
	}
}

func (rc *relayClient) start() {
	ctx, cancel := context.WithCancel(context.Background())
	rc.cancel = cancel
	rc.done = make(chan struct{})
	go rc.run(ctx)
}

// close stops the client and waits for its goroutine.
func (rc *relayClient) close() {
	rc.mu.Lock()
	rc.dead = true
	c := rc.cur.Swap(nil)
	rc.mu.Unlock()
	if rc.cancel != nil {
		rc.cancel()
	}
	if c != nil {
		c.Close()
	}
	if rc.done != nil {
		<-rc.done
	}
}

func (rc *relayClient) run(ctx context.Context) {
	defer close(rc.done)
	cfg := &rc.px.cfg
	log := rc.px.log.With("relay", rc.relayKey)
	backoff := cfg.RedialMin
	wait := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, cfg.RedialMax)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	failures := 0
	for {
		c, err := rc.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			rc.setErr(err)
			if failures++; failures == 1 {
				log.Warn("relay proxy: cannot reach the framed relay; retrying", "err", err)
			} else {
				log.Debug("relay proxy: cannot reach the framed relay", "err", err, "failures", failures)
			}
			if !wait() {
				return
			}
			continue
		}
		rc.mu.Lock()
		if rc.dead {
			rc.mu.Unlock()
			c.Close()
			return
		}
		rc.cur.Store(c)
		rc.mu.Unlock()
		failures = 0
		rc.px.m.connects[pathOf(c.Transport())].Add(1)
		log.Info("relay proxy: connected to the framed relay", "transport", c.Transport())
		began := time.Now()
		err = rc.recvLoop(c)
		rc.cur.CompareAndSwap(c, nil)
		c.Close()
		if ctx.Err() != nil {
			return
		}
		rc.setErr(err)
		log.Warn("relay proxy: framed relay connection lost; redialing", "err", err)
		if time.Since(began) >= cfg.RedialMax {
			backoff = cfg.RedialMin // it was up for a while: not a flapping relay
		}
		if !wait() {
			return
		}
	}
}

// dial tries the URLs in order and returns the first connection made.
func (rc *relayClient) dial(ctx context.Context) (*framed.Client, error) {
	cfg := &rc.px.cfg
	var errs []error
	for _, u := range rc.urls {
		dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		c, err := framed.Dial(dctx, framed.DialConfig{
			URL: u, RelayKey: rc.relayKey, Machine: cfg.Machine, TLSConfig: cfg.TLSConfig,
		})
		cancel()
		if err == nil {
			return c, nil
		}
		rc.px.m.dialFailures.Add(1)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// recvLoop dispatches received packets to their peers' loopback endpoints until
// the connection fails. Notices (peer gone, not allowed) leave it up.
func (rc *relayClient) recvLoop(c *framed.Client) error {
	path := pathOf(c.Transport())
	for {
		src, pkt, err := c.Recv()
		if err != nil {
			var gone *framed.PeerGoneError
			var re *framed.RelayError
			switch {
			case errors.As(err, &gone):
				rc.px.m.notice(noticePeerGone)
				rc.notice(gone.Peer, err)
				continue
			case errors.As(err, &re) && re.Code == framed.CodeNotAllowed:
				rc.px.m.notice(noticeNotAllowed)
				rc.notice(re.Subject, err)
				continue
			}
			return err
		}
		p := rc.peer(src)
		if p == nil {
			rc.px.m.drop(dropUnknownPeer)
			continue
		}
		p.deliver(pkt, path)
	}
}

// notice records a relay's notice about a peer; the relay may send one per packet,
// so it is logged at debug level only.
func (rc *relayClient) notice(k key.NodePublic, err error) {
	if p := rc.peer(k); p != nil {
		p.lastErr.set(err)
	}
	rc.px.log.Debug("relay proxy: framed relay notice", "relay", rc.relayKey, "peer", k, "err", err)
}

// framedPath carries a peer's packets over a shared relayClient.
type framedPath struct {
	p   *peer
	cfg Path
	rc  *relayClient
}

func (f *framedPath) path() *Path { return &f.cfg }

// start does nothing: the relay client runs on its own and Set gives it the peer.
func (f *framedPath) start() {}

// stop does nothing: Set takes the peer away from the relay client and closes
// clients that no peer uses.
func (f *framedPath) stop() {}

func (f *framedPath) status(st *PeerStatus) {
	if c := f.rc.cur.Load(); c != nil {
		st.Transport, st.Bound = c.Transport(), true
	}
}

func (f *framedPath) send(pkt []byte) {
	c := f.rc.cur.Load()
	if c == nil {
		f.p.px.m.drop(dropNotConnected)
		return
	}
	if err := c.Send(f.p.key, pkt); err != nil {
		f.p.px.m.drop(dropSendError)
		f.p.lastErr.set(err)
		if !errors.Is(err, framed.ErrFrameTooLarge) {
			c.Close() // the receive loop fails and redials
		}
		return
	}
	f.p.sent(pathOf(c.Transport()), len(pkt))
}
