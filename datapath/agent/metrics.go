package agent

import (
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cvlan/cvlan/internal/version"
)

// metrics are the agent's Prometheus metrics, on their own registry.
type metrics struct {
	reg         *prometheus.Registry
	connected   prometheus.Gauge
	disconnects prometheus.Counter
	seq         prometheus.Gauge
	applyErrors prometheus.Counter
	rotations   prometheus.Counter
	pathReports prometheus.Counter
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cvlan_agent_control_connected", Help: "1 while the control connection is up, else 0.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvlan_agent_control_disconnects_total", Help: "Control connections that ended or failed to start.",
		}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cvlan_agent_map_seq", Help: "Sequence number of the applied network map within its connection.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvlan_agent_apply_errors_total", Help: "Network maps that could not be applied to the kernel.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvlan_agent_node_key_rotations_total", Help: "Node keys this agent made on the controller's request.",
		}),
		pathReports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cvlan_agent_path_reports_total", Help: "Peers reported to the controller because their path carried no handshake.",
		}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cvlan_agent_info", Help: "The agent's version, interface and WireGuard implementation (kernel or userspace).",
		ConstLabels: prometheus.Labels{"version": version.Version, "interface": a.cfg.Interface, "wireguard": a.dev.Impl()},
	})
	info.Set(1)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info, m.connected, m.disconnects, m.seq, m.applyErrors, m.rotations, m.pathReports, (*peerCollector)(a), (*policyCollector)(a))
	return m
}

var (
	peersDesc     = prometheus.NewDesc("cvlan_agent_peers", "WireGuard peers configured.", nil, nil)
	handshakeDesc = prometheus.NewDesc("cvlan_agent_peer_last_handshake_age_seconds",
		"Seconds since the last WireGuard handshake with the peer (absent before the first).", []string{"peer", "node"}, nil)
	rxDesc = prometheus.NewDesc("cvlan_agent_peer_receive_bytes_total", "Bytes received from the peer.", []string{"peer", "node"}, nil)
	txDesc = prometheus.NewDesc("cvlan_agent_peer_transmit_bytes_total", "Bytes sent to the peer.", []string{"peer", "node"}, nil)
)

// peerCollector reads the device's per-peer counters at scrape time.
type peerCollector Agent

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- handshakeDesc
	ch <- rxDesc
	ch <- txDesc
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	a := (*Agent)(c)
	stats, err := a.dev.Stats()
	if err != nil {
		return
	}
	names := map[string]string{}
	a.mu.Lock()
	if a.applied != nil {
		for _, p := range a.applied.Peers {
			names[p.NodeKey.String()] = p.Name
		}
	}
	a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(len(stats)))
	now := time.Now()
	for _, s := range stats {
		k := s.PublicKey.String()
		if !s.LastHandshake.IsZero() {
			ch <- prometheus.MustNewConstMetric(handshakeDesc, prometheus.GaugeValue, now.Sub(s.LastHandshake).Seconds(), k, names[k])
		}
		ch <- prometheus.MustNewConstMetric(rxDesc, prometheus.CounterValue, float64(s.RxBytes), k, names[k])
		ch <- prometheus.MustNewConstMetric(txDesc, prometheus.CounterValue, float64(s.TxBytes), k, names[k])
	}
}

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
