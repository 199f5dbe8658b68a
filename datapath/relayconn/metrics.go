package relayconn

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cvlan/cvlan/datapath/relay/framed"
)

// Paths, the "path" label: how a packet travelled between the agent and the relay.
const (
	pathUDP = iota
	pathTCP
	pathWS
	numPaths
)

var pathNames = [numPaths]string{pathUDP: "udp", pathTCP: framed.TransportTCP, pathWS: framed.TransportWS}

func pathOf(transport string) int {
	if transport == framed.TransportWS {
		return pathWS
	}
	return pathTCP
}

// Directions, the "direction" label: out is from WireGuard to the relay, in from
// the relay to WireGuard.
const (
	dirOut = iota
	dirIn
)

var dirNames = [2]string{dirOut: "out", dirIn: "in"}

// Drop reasons, the "reason" label of cvlan_agent_relay_drops_total.
const (
	dropForeignSource = iota // a datagram to a loopback endpoint not from WireGuard's port
	dropNoPath               // a datagram to an endpoint whose path is being removed
	dropNotConnected         // a packet for a framed relay while it is not connected
	dropSendError            // the socket or relay connection refused a packet
	dropDeliverError         // writing a packet to WireGuard failed
	dropInvalidAck           // a bind-magic datagram from the relay that is not an ack of ours
	dropUnknownPeer          // a framed packet from a node key with no path through that relay
	numDrops
)

var dropNames = [numDrops]string{
	dropForeignSource: "foreign_source",
	dropNoPath:        "no_path",
	dropNotConnected:  "not_connected",
	dropSendError:     "send_error",
	dropDeliverError:  "deliver_error",
	dropInvalidAck:    "invalid_ack",
	dropUnknownPeer:   "unknown_peer",
}

// Framed relay notices, the "kind" label of cvlan_agent_relay_framed_notices_total.
const (
	noticePeerGone = iota
	noticeNotAllowed
	numNotices
)

var noticeNames = [numNotices]string{noticePeerGone: "peer_gone", noticeNotAllowed: "not_allowed"}

// metrics are the proxy's counters and its Prometheus collector. The counters
// count whether or not a registry was given.
type metrics struct {
	px           *Proxy
	packets      [numPaths][2]atomic.Uint64
	bytes        [numPaths][2]atomic.Uint64
	drops        [numDrops]atomic.Uint64
	binds, acks  atomic.Uint64
	connects     [numPaths]atomic.Uint64 // only tcp and ws move
	dialFailures atomic.Uint64
	notices      [numNotices]atomic.Uint64

	descPackets, descBytes, descDrops, descBinds, descAcks, descConnects,
	descDialFailures, descNotices, descPeers, descConnected *prometheus.Desc
}

func newMetrics(px *Proxy) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("cvlan_agent_relay_"+name, help, labels, nil)
	}
	return &metrics{
		px:               px,
		descPackets:      d("packets_total", "WireGuard packets carried through relays, by path (udp, tcp, ws) and direction (out: to the relay, in: from it).", "path", "direction"),
		descBytes:        d("bytes_total", "WireGuard packet bytes carried through relays, by path and direction.", "path", "direction"),
		descDrops:        d("drops_total", "Packets dropped by the relay proxy, by reason.", "reason"),
		descBinds:        d("binds_sent_total", "Bind packets sent to UDP relays."),
		descAcks:         d("binds_acked_total", "Valid acks of our binds received from UDP relays."),
		descConnects:     d("framed_connects_total", "Connections made to framed relays, by transport.", "transport"),
		descDialFailures: d("framed_dial_failures_total", "Failed attempts to connect to a framed relay URL."),
		descNotices:      d("framed_notices_total", "Notices from framed relays about peers, by kind (peer_gone, not_allowed).", "kind"),
		descPeers:        d("peers", "Peers reached through a relay, by mode (udp, framed).", "mode"),
		descConnected:    d("framed_connected", "Framed relay connections that are up."),
	}
}

func (m *metrics) packet(path, dir, n int) {
	m.packets[path][dir].Add(1)
	m.bytes[path][dir].Add(uint64(n))
}

func (m *metrics) drop(reason int) { m.drops[reason].Add(1) }

func (m *metrics) notice(kind int) { m.notices[kind].Add(1) }

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.descPackets, m.descBytes, m.descDrops, m.descBinds, m.descAcks,
		m.descConnects, m.descDialFailures, m.descNotices, m.descPeers, m.descConnected} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for p := range numPaths {
		for dir := range 2 {
			counter(m.descPackets, m.packets[p][dir].Load(), pathNames[p], dirNames[dir])
			counter(m.descBytes, m.bytes[p][dir].Load(), pathNames[p], dirNames[dir])
		}
	}
	for r := range numDrops {
		counter(m.descDrops, m.drops[r].Load(), dropNames[r])
	}
	counter(m.descBinds, m.binds.Load())
	counter(m.descAcks, m.acks.Load())
	for _, p := range []int{pathTCP, pathWS} {
		counter(m.descConnects, m.connects[p].Load(), pathNames[p])
	}
	counter(m.descDialFailures, m.dialFailures.Load())
	for k := range numNotices {
		counter(m.descNotices, m.notices[k].Load(), noticeNames[k])
	}
	var udp, fr, connected int
	m.px.mu.Lock()
	for _, p := range m.px.peers {
		if b := p.backend(); b != nil && b.path().Mode == ModeUDP {
			udp++
		} else {
			fr++
		}
	}
	for _, rc := range m.px.clients {
		if rc.cur.Load() != nil {
			connected++
		}
	}
	m.px.mu.Unlock()
	gauge(m.descPeers, udp, ModeUDP.String())
	gauge(m.descPeers, fr, ModeFramed.String())
	gauge(m.descConnected, connected)
}
