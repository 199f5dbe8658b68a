package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relayconn"
)

// DefaultPathTimeout is how long WireGuard may try a peer over one path without a
// handshake before the agent reports the path failed. WireGuard retries a
// handshake every 5 s, so this leaves it two tries.
const DefaultPathTimeout = 12 * time.Second

// staleHandshake is the age after which a handshake no longer proves a path: a
// working session rekeys every 2 minutes, and WireGuard drops keys after 3.
const staleHandshake = 3 * time.Minute

// pathSample is what the agent knows of one peer at one moment.
type pathSample struct {
	nodeID        string
	mode          int // 0 direct, else netmap.PathUDP or netmap.PathFramed
	lastHandshake time.Time
	txBytes       int64
	rxBytes       int64
}

// pathState is what the watch remembers of one peer.
type pathState struct {
	mode       int
	since      time.Time // when the peer went on this path; zero for the first one seen
	tx, rx     int64     // bytes at the last sample
	tried      time.Time // first sample that saw WireGuard send without a handshake
	lastReport time.Time
}

// pathWatch decides, from samples of WireGuard's per-peer counters, which peers'
// paths failed: WireGuard has been sending to the peer for the timeout (handshake
// initiations count as sent bytes) while nothing came back from it and there was
// no handshake since the peer went on its current path (none for staleHandshake).
// A peer's first path counts handshakes from before the watch began; the agent
// resets a peer's WireGuard session when its path changes, so the new path gets a
// fresh handshake at once. A peer is reported again only after another timeout;
// the controller ignores reports about a path it already left.
type pathWatch struct {
	timeout time.Duration
	peers   map[string]*pathState
}

func newPathWatch(timeout time.Duration) *pathWatch {
	return &pathWatch{timeout: timeout, peers: map[string]*pathState{}}
}

// observe takes one sample of every peer and returns the failed paths to report.
func (w *pathWatch) observe(now time.Time, samples []pathSample) []*controlpb.PathReport {
	var out []*controlpb.PathReport
	seen := make(map[string]bool, len(samples))
	for _, s := range samples {
		seen[s.nodeID] = true
		st := w.peers[s.nodeID]
		if st == nil || st.mode != s.mode {
			ns := &pathState{mode: s.mode, since: now, tx: s.txBytes, rx: s.rxBytes}
			if st == nil {
				ns.since = time.Time{}
			}
			w.peers[s.nodeID] = ns
			continue
		}
		sent, heard := s.txBytes > st.tx, s.rxBytes > st.rx
		st.tx, st.rx = s.txBytes, s.rxBytes
		proven := heard || !s.lastHandshake.IsZero() && !s.lastHandshake.Before(st.since) && now.Sub(s.lastHandshake) < staleHandshake
		switch {
		case proven:
			st.tried = time.Time{}
		case sent && st.tried.IsZero():
			st.tried = now
		}
		if st.tried.IsZero() || now.Sub(st.tried) < w.timeout {
			continue
		}
		if !st.lastReport.IsZero() && now.Sub(st.lastReport) < w.timeout {
			continue
		}
		st.lastReport = now
		out = append(out, &controlpb.PathReport{PeerNodeId: s.nodeID, Failed: uint32(s.mode)})
	}
	for id := range w.peers {
		if !seen[id] {
			delete(w.peers, id)
		}
	}
	return out
}

// relayPaths turns the map's relayed peers into relayconn paths. A peer whose
// relay is missing from the relay map, or lacks what its mode needs, stays
// direct (and is logged): its path fails and the controller picks another.
func (a *Agent) relayPaths(m *netmap.Map) []relayconn.Path {
	var out []relayconn.Path
	for _, p := range m.Peers {
		if p.Relay == nil {
			continue
		}
		r := m.Relay(p.Relay.RelayID)
		switch {
		case r == nil:
			a.log.Warn("peer's relay is not in the relay map; trying direct", "peer", p.Name, "relay", p.Relay.RelayID)
		case p.Relay.Mode == netmap.PathUDP && r.Addr.IsValid():
			out = append(out, relayconn.Path{
				Peer: p.NodeKey, Mode: relayconn.ModeUDP, Relay: netip.AddrPortFrom(r.Addr, p.Relay.Port),
				Session: session.ID(p.Relay.Session), Side: session.Side(p.Relay.Side), Token: session.Token(p.Relay.Token),
			})
		case p.Relay.Mode == netmap.PathFramed && !r.Key.IsZero() && (r.TLSURL != "" || r.WSURL != ""):
			var urls []string
			for _, u := range []string{r.TLSURL, r.WSURL} {
				if u != "" {
					urls = append(urls, u)
				}
			}
			out = append(out, relayconn.Path{Peer: p.NodeKey, Mode: relayconn.ModeFramed, RelayKey: r.Key, URLs: urls})
		default:
			a.log.Warn("peer's relay cannot carry its path; trying direct", "peer", p.Name, "relay", r.Name, "mode", p.Relay.Mode)
		}
	}
	return out
}

// watchPaths samples WireGuard every second and reports failed paths to the
// controller.
func (a *Agent) watchPaths(ctx context.Context) {
	w := newPathWatch(a.cfg.PathTimeout)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stats, err := a.dev.Stats()
		if err != nil {
			continue
		}
		byKey := make(map[key.NodePublic]int, len(stats))
		for i, s := range stats {
			byKey[s.PublicKey] = i
		}
		a.mu.Lock()
		m := a.applied
		a.mu.Unlock()
		if m == nil {
			continue
		}
		samples := make([]pathSample, 0, len(m.Peers))
		for _, p := range m.Peers {
			i, ok := byKey[p.NodeKey]
			if !ok {
				continue
			}
			s := pathSample{nodeID: p.NodeID, lastHandshake: stats[i].LastHandshake, txBytes: stats[i].TxBytes, rxBytes: stats[i].RxBytes}
			if p.Relay != nil {
				s.mode = p.Relay.Mode
			}
			samples = append(samples, s)
		}
		for _, r := range w.observe(time.Now(), samples) {
			a.log.Info("no handshake with peer on its path; asking the controller for the next", "peer", r.PeerNodeId, "failed_path", r.Failed)
			if err := a.client.Send(&controlpb.ClientMessage{Msg: &controlpb.ClientMessage_PathReport{PathReport: r}}); err == nil {
				a.m.pathReports.Inc()
			}
		}
	}
}

// pathOf names a peer's path, to see when it changes.
func pathOf(p *netmap.Peer) string {
	if p == nil || p.Relay == nil {
		return "direct"
	}
	r := p.Relay
	return fmt.Sprintf("%d/%s/%x/%d/%d", r.Mode, r.RelayID, r.Session, r.Side, r.Port)
}

// movedPeers are the peers of m that a.applied had on another path: their
// WireGuard sessions are reset so that the new path gets a handshake at once.
func (a *Agent) movedPeers(m *netmap.Map) map[key.NodePublic]bool {
	if a.applied == nil || m == nil {
		return nil
	}
	var out map[key.NodePublic]bool
	for i := range m.Peers {
		p := &m.Peers[i]
		old := a.applied.Peer(p.NodeID)
		if old == nil || !old.NodeKey.Equal(p.NodeKey) || pathOf(old) == pathOf(p) {
			continue
		}
		if out == nil {
			out = map[key.NodePublic]bool{}
		}
		out[p.NodeKey] = true
	}
	return out
}
