// Package stun is the relay's STUN server: it answers RFC 5389 Binding requests
// with the source address and port they came from (XOR-MAPPED-ADDRESS), so that
// agents learn their post-NAT endpoint for NAT traversal. Messages are parsed and
// built with github.com/pion/stun/v3. It must never answer anything but a
// well-formed Binding request, never answer with an address other than the
// request's source, and never send more than one response per request (no
// amplification). It keeps no per-client state and applies no rate limit.
package stun

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// maxPacket is the largest datagram read; STUN requests are far smaller.
const maxPacket = 1500

// Server answers Binding requests. Its zero value is ready; its counters are safe
// for concurrent use, and several goroutines may run Serve on different sockets.
type Server struct {
	requests  atomic.Uint64 // Binding requests answered
	malformed atomic.Uint64 // datagrams that are not STUN messages
	ignored   atomic.Uint64 // STUN messages other than Binding requests
	sendErrs  atomic.Uint64 // responses that could not be sent
}

// Counters is a snapshot of a Server's counters.
type Counters struct {
	Requests, Malformed, Ignored, SendErrors uint64
}

// Counters returns the counters so far.
func (s *Server) Counters() Counters {
	return Counters{s.requests.Load(), s.malformed.Load(), s.ignored.Load(), s.sendErrs.Load()}
}

// Serve answers Binding requests on conn until reading from it fails (net.ErrClosed
// after the caller closes it), and returns that error.
func (s *Server) Serve(conn net.PacketConn) error {
	buf := make([]byte, maxPacket)
	out := new(stun.Message)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("reading STUN requests on %s: %w", conn.LocalAddr(), err)
		}
		resp := s.Handle(buf[:n], from, out)
		if resp == nil {
			continue
		}
		if _, err := conn.WriteTo(resp, from); err != nil {
			s.sendErrs.Add(1)
		}
	}
}

// Handle returns the response to the datagram b received from from, or nil if it
// gets none. The response aliases out's buffer.
func (s *Server) Handle(b []byte, from net.Addr, out *stun.Message) []byte {
	ap, ok := addrPort(from)
	if !ok || !stun.IsMessage(b) {
		s.malformed.Add(1)
		return nil
	}
	in := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := in.Decode(); err != nil {
		s.malformed.Add(1)
		return nil
	}
	if in.Type != stun.BindingRequest {
		s.ignored.Add(1)
		return nil
	}
	// A request that carries a FINGERPRINT must have a right one.
	if in.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(in); err != nil {
			s.malformed.Add(1)
			return nil
		}
	}
	out.Reset()
	err := out.Build(
		stun.NewTransactionIDSetter(in.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())},
		stun.Fingerprint,
	)
	if err != nil {
		s.malformed.Add(1)
		return nil
	}
	s.requests.Add(1)
	return out.Raw
}

// addrPort is a UDP source address.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return ap, ap.IsValid()
	case nil:
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

var (
	descRequests                      = prometheus.NewDesc("cvlan_relay_stun_requests_total", "Binding requests answered.", nil, nil)
	descDropped                       = prometheus.NewDesc("cvlan_relay_stun_dropped_total", "Datagrams not answered, by reason.", []string{"reason"}, nil)
	_            prometheus.Collector = (*Server)(nil)
)

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descDropped
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	c := s.Counters()
	ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(c.Requests))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.Malformed), "malformed")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.Ignored), "not_binding_request")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.SendErrors), "send_error")
}
