package framed

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons, the "reason" label of cvlan_relay_framed_drops_total.
const (
	dropQueueFull   = "queue_full"
	dropNotAllowed  = "not_allowed"
	dropUnknownPeer = "unknown_peer"
	dropMalformed   = "malformed"
)

var dropReasons = []string{dropQueueFull, dropNotAllowed, dropUnknownPeer, dropMalformed}

var transports = []string{TransportTCP, TransportWS}

// transportCounters are the per-transport counters.
type transportCounters struct {
	clients, links                         atomic.Int64
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
}

type metrics struct {
	tr           [2]transportCounters
	drops        [4]atomic.Uint64
	relayed      atomic.Uint64
	meshForwards atomic.Uint64
	refused      atomic.Uint64

	descClients, descLinks, descFrames, descBytes, descDrops, descRelayed, descMesh, descRefused *prometheus.Desc
}

func newMetrics() *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("cvlan_relay_framed_"+name, help, labels, nil)
	}
	return &metrics{
		descClients: d("clients", "Connected, authenticated clients.", "transport"),
		descLinks:   d("mesh_links", "Connected mesh links to other relays of the region.", "transport"),
		descFrames:  d("frames_total", "Frames by transport and direction.", "transport", "direction"),
		descBytes:   d("bytes_total", "Frame bytes (headers included, Noise overhead not) by transport and direction.", "transport", "direction"),
		descDrops:   d("drops_total", "Frames dropped, by reason.", "reason"),
		descRelayed: d("packets_relayed_total", "Packets delivered to a local client's queue."),
		descMesh:    d("mesh_forwards_total", "Packets forwarded to another relay of the region."),
		descRefused: d("refused_total", "Handshakes the authorizer refused."),
	}
}

func trIndex(t string) int {
	if t == TransportWS {
		return 1
	}
	return 0
}

func (m *metrics) connected(transport string, mesh bool, d int64) {
	if mesh {
		m.tr[trIndex(transport)].links.Add(d)
	} else {
		m.tr[trIndex(transport)].clients.Add(d)
	}
}

func (m *metrics) frameIn(transport string, n int) {
	t := &m.tr[trIndex(transport)]
	t.framesIn.Add(1)
	t.bytesIn.Add(uint64(n))
}

func (m *metrics) frameOut(transport string, n int) {
	t := &m.tr[trIndex(transport)]
	t.framesOut.Add(1)
	t.bytesOut.Add(uint64(n))
}

func (m *metrics) drop(reason string) {
	for i, r := range dropReasons {
		if r == reason {
			m.drops[i].Add(1)
			return
		}
	}
}

// Drops returns the drops so far by reason (queue_full, not_allowed,
// unknown_peer, malformed).
func (s *Server) Drops() map[string]uint64 {
	out := map[string]uint64{}
	for i, r := range dropReasons {
		out[r] = s.metrics.drops[i].Load()
	}
	return out
}

// MeshForwards returns how many packets s forwarded to other relays.
func (s *Server) MeshForwards() uint64 { return s.metrics.meshForwards.Load() }

// Clients returns the connected clients by transport (mesh links excluded).
func (s *Server) Clients() map[string]int64 {
	return map[string]int64{
		TransportTCP: s.metrics.tr[0].clients.Load(),
		TransportWS:  s.metrics.tr[1].clients.Load(),
	}
}

// Collector returns the Prometheus collector of s.
func (s *Server) Collector() prometheus.Collector { return s.metrics }

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.descClients, m.descLinks, m.descFrames, m.descBytes, m.descDrops, m.descRelayed, m.descMesh, m.descRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for i, t := range transports {
		c := &m.tr[i]
		ch <- prometheus.MustNewConstMetric(m.descClients, prometheus.GaugeValue, float64(c.clients.Load()), t)
		ch <- prometheus.MustNewConstMetric(m.descLinks, prometheus.GaugeValue, float64(c.links.Load()), t)
		ch <- prometheus.MustNewConstMetric(m.descFrames, prometheus.CounterValue, float64(c.framesIn.Load()), t, "in")
		ch <- prometheus.MustNewConstMetric(m.descFrames, prometheus.CounterValue, float64(c.framesOut.Load()), t, "out")
		ch <- prometheus.MustNewConstMetric(m.descBytes, prometheus.CounterValue, float64(c.bytesIn.Load()), t, "in")
		ch <- prometheus.MustNewConstMetric(m.descBytes, prometheus.CounterValue, float64(c.bytesOut.Load()), t, "out")
	}
	for i, r := range dropReasons {
		ch <- prometheus.MustNewConstMetric(m.descDrops, prometheus.CounterValue, float64(m.drops[i].Load()), r)
	}
	ch <- prometheus.MustNewConstMetric(m.descRelayed, prometheus.CounterValue, float64(m.relayed.Load()))
	ch <- prometheus.MustNewConstMetric(m.descMesh, prometheus.CounterValue, float64(m.meshForwards.Load()))
	ch <- prometheus.MustNewConstMetric(m.descRefused, prometheus.CounterValue, float64(m.refused.Load()))
}
