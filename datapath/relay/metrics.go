package relay

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/datapath/relay/session"
	"github.com/cvlan/cvlan/datapath/relay/xdprelay"
)

// PathStats count what one path relayed.
type PathStats struct {
	Packets uint64
	Bytes   uint64 // UDP payload bytes
}

// Stats are the relay's totals.
type Stats struct {
	XDP, Go  PathStats
	Binds    uint64 // accepted bind packets
	Drops    [session.NumDropReasons]uint64
	XDPStats xdprelay.Stats // the program's global counters; zero without XDP
	Sessions int            // configured
	Active   int            // both sides bound
	OnXDP    int            // both XDP entries installed
	Expired  uint64         // idle sessions unbound
}

// Stats returns the relay's totals.
func (r *Relay) Stats() Stats {
	st := Stats{
		Go:       PathStats{r.goCnt.Packets.Load(), r.goCnt.Bytes.Load()},
		Binds:    r.goCnt.Binds.Load(),
		Sessions: r.table.Len(),
		Expired:  r.expired.Load(),
	}
	for i := range st.Drops {
		st.Drops[i] = r.goCnt.Drops[i].Load()
	}
	if r.xdp != nil {
		if xs, err := r.xdp.Stats(); err == nil {
			st.XDPStats = xs
			st.XDP = PathStats{xs.Packets(), xs.Bytes()}
		} else {
			r.log.Warn("relay: reading XDP counters", "err", err)
		}
	}
	for _, s := range r.table.Sessions() {
		if s.Active() {
			st.Active++
		}
	}
	r.mu.Lock()
	for _, xs := range r.xs {
		if xs.keys[0] != nil && xs.keys[1] != nil {
			st.OnXDP++
		}
	}
	r.mu.Unlock()
	return st
}

// SessionStatus is one session as the relay sees it.
type SessionStatus struct {
	ID        session.ID
	Ports     [2]uint16
	Endpoints [2]netip.AddrPort // learned endpoints; invalid while unbound
	OnXDP     bool              // both directions are relayed in XDP
	XDP, Go   [2]PathStats      // relayed from each side, by path
	LastSeen  time.Time         // last bind or relayed packet on either path
}

// Sessions returns the status of every session, by id.
func (r *Relay) Sessions() []SessionStatus {
	var mono time.Duration
	if r.xdp != nil {
		mono = xdprelay.Monotonic()
	}
	now := time.Now()
	var out []SessionStatus
	for _, s := range r.table.Sessions() {
		st := SessionStatus{ID: s.ID(), LastSeen: s.LastSeen()}
		for side := range st.Ports {
			sd := session.Side(side)
			st.Ports[side] = s.Port(sd)
			st.Endpoints[side], _ = s.Peer(sd)
			p, b := s.GoCounters(sd)
			st.Go[side] = PathStats{p, b}
		}
		r.mu.Lock()
		if xs := r.xs[s]; xs != nil && r.xdp != nil {
			var c [2]xdprelay.Counters
			c, st.OnXDP = r.xdpCounters(s, xs)
			for side := range c {
				st.XDP[side] = PathStats{c[side].Packets, c[side].Bytes}
				if c[side].LastSeen > 0 {
					if t := now.Add(c[side].LastSeen - mono); t.After(st.LastSeen) {
						st.LastSeen = t
					}
				}
			}
		}
		r.mu.Unlock()
		out = append(out, st)
	}
	return out
}

var (
	packetsDesc  = prometheus.NewDesc("cvlan_relay_packets_total", "Packets relayed, by path (xdp, go).", []string{"path"}, nil)
	bytesDesc    = prometheus.NewDesc("cvlan_relay_bytes_total", "UDP payload bytes relayed, by path (xdp, go).", []string{"path"}, nil)
	dropsDesc    = prometheus.NewDesc("cvlan_relay_drops_total", "Packets the Go path dropped, by reason.", []string{"reason"}, nil)
	bindsDesc    = prometheus.NewDesc("cvlan_relay_binds_total", "Bind packets accepted.", nil, nil)
	sessionsDesc = prometheus.NewDesc("cvlan_relay_sessions", "Sessions, by state: configured, active (both sides bound), xdp (relayed in XDP).", []string{"state"}, nil)
	expiredDesc  = prometheus.NewDesc("cvlan_relay_sessions_expired_total", "Idle sessions unbound.", nil, nil)
	passedDesc   = prometheus.NewDesc("cvlan_relay_xdp_passed_total", "Packets the XDP program passed to the stack, by reason.", []string{"reason"}, nil)
	attachedDesc = prometheus.NewDesc("cvlan_relay_xdp_attached", "1 for each interface the XDP program is attached to, with its mode.", []string{"interface", "mode"}, nil)
)

// Collector returns a Prometheus collector of the relay's metrics, read at scrape
// time.
func (r *Relay) Collector() prometheus.Collector { return (*collector)(r) }

type collector Relay

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, dropsDesc, bindsDesc, sessionsDesc, expiredDesc, passedDesc, attachedDesc} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := (*Relay)(c)
	st := r.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter(packetsDesc, st.XDP.Packets, "xdp")
	counter(packetsDesc, st.Go.Packets, "go")
	counter(bytesDesc, st.XDP.Bytes, "xdp")
	counter(bytesDesc, st.Go.Bytes, "go")
	for i, n := range st.Drops {
		counter(dropsDesc, n, session.DropReason(i).String())
	}
	counter(bindsDesc, st.Binds)
	gauge(sessionsDesc, st.Sessions, "configured")
	gauge(sessionsDesc, st.Active, "active")
	gauge(sessionsDesc, st.OnXDP, "xdp")
	counter(expiredDesc, st.Expired)
	if r.xdp != nil {
		for _, s := range []xdprelay.Stat{xdprelay.StatPassOther, xdprelay.StatPassMalformed, xdprelay.StatPassBind,
			xdprelay.StatPassNoSession, xdprelay.StatPassTooBig} {
			counter(passedDesc, st.XDPStats[s], s.String()[len("pass_"):])
		}
	}
	for _, a := range r.XDP() {
		gauge(attachedDesc, 1, a.Interface, a.Mode.String())
	}
}
