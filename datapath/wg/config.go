package wg

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/cvlan/cvlan/controlplane/key"
)

// maxKeepalive is the largest persistent keepalive WireGuard accepts (16 bits of seconds).
const maxKeepalive = 65535 * time.Second

// Config is the whole desired configuration of the device.
type Config struct {
	// PrivateKey is the node key; required.
	PrivateKey key.Private
	// ListenPort is the UDP port; 0 keeps whatever port the device has (a random one
	// on a fresh device).
	ListenPort int
	// Peers are exactly the device's peers.
	Peers []Peer
}

// Peer is one WireGuard peer.
type Peer struct {
	PublicKey key.NodePublic
	// Endpoint is where to send to the peer first; the zero value sets none and keeps
	// what the device has learned.
	Endpoint netip.AddrPort
	// AllowedIPs are the overlay prefixes routed to the peer and accepted from it. A
	// prefix may belong to one peer only.
	AllowedIPs []netip.Prefix
	// PersistentKeepalive, in whole seconds; 0 turns it off.
	PersistentKeepalive time.Duration
}

// PeerStats is what Stats reports for one peer.
type PeerStats struct {
	PublicKey key.NodePublic
	// Endpoint is the peer's current endpoint (set or learned), zero if none.
	Endpoint netip.AddrPort
	// LastHandshake is the time of the last completed handshake, zero if none.
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
}

// Validate reports the first thing WireGuard could not hold as asked (which would
// otherwise make every Set see a difference). Errors name the peer.
func (c Config) Validate() error {
	if c.PrivateKey.IsZero() {
		return errors.New("WireGuard config: no private key")
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return fmt.Errorf("WireGuard config: listen port %d out of range", c.ListenPort)
	}
	self := c.PrivateKey.NodePublic()
	seen := map[key.NodePublic]bool{}
	owner := map[netip.Prefix]key.NodePublic{}
	for _, p := range c.Peers {
		k := p.PublicKey
		switch {
		case k.IsZero():
			return errors.New("WireGuard config: peer with a zero public key")
		case k.Equal(self):
			return fmt.Errorf("peer %s: is this device's own key", k)
		case seen[k]:
			return fmt.Errorf("peer %s: listed twice", k)
		}
		seen[k] = true
		if p.Endpoint.IsValid() || p.Endpoint != (netip.AddrPort{}) {
			if !p.Endpoint.Addr().IsValid() || p.Endpoint.Port() == 0 || p.Endpoint.Addr().IsUnspecified() {
				return fmt.Errorf("peer %s: endpoint %s: want an address and a port", k, p.Endpoint)
			}
		}
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > maxKeepalive {
			return fmt.Errorf("peer %s: persistent keepalive %s out of range", k, p.PersistentKeepalive)
		}
		for _, a := range p.AllowedIPs {
			if !a.IsValid() || a.Addr().Zone() != "" || a.Addr().Is4In6() {
				return fmt.Errorf("peer %s: allowed IP %s: invalid prefix (IPv4 must not be mapped, no zones)", k, a)
			}
			m := normPrefix(a)
			if o, ok := owner[m]; ok {
				if o.Equal(k) {
					return fmt.Errorf("peer %s: allowed IP %s listed twice", k, m)
				}
				return fmt.Errorf("peer %s: allowed IP %s also belongs to peer %s", k, m, o)
			}
			owner[m] = k
		}
	}
	return nil
}

// Set makes the device's configuration equal to cfg, changing only what differs; a
// peer whose configuration is already right is not touched at all. It returns
// ErrNoChanges when nothing had to change.
//
// Endpoints: WireGuard learns a peer's new address when the peer roams. Set sets a
// peer's endpoint when cfg's differs from the device's, except when cfg's is the one
// this Device set last, so a roamed peer is not sent back to its old address by every
// Set; a new Device (as after a restart) compares with the device only.
func (d *Device) Set(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	live, err := d.client.Device(d.name)
	if err != nil {
		return fmt.Errorf("reading WireGuard device %s: %w", d.name, err)
	}
	wc := plan(live, cfg, d.endpoints)
	if wc.PrivateKey == nil && wc.ListenPort == nil && len(wc.Peers) == 0 {
		d.remember(cfg)
		return ErrNoChanges
	}
	if err := d.apply(wc); err != nil {
		return err
	}
	d.remember(cfg)
	d.log.Debug("WireGuard configuration changed", "peers_changed", len(wc.Peers), "peers", len(cfg.Peers))
	return nil
}

// remember records the endpoints cfg asks for, after they are applied.
func (d *Device) remember(cfg Config) {
	clear(d.endpoints)
	for _, p := range cfg.Peers {
		if p.Endpoint.IsValid() {
			d.endpoints[p.PublicKey] = normAddrPort(p.Endpoint)
		}
	}
}

// apply configures the device with wc. If that fails and wc changes several peers, it
// applies the device fields and then each peer on its own, so that one peer the
// device refuses does not hold back the others, and the error names it.
func (d *Device) apply(wc wgtypes.Config) error {
	err := d.client.ConfigureDevice(d.name, wc)
	if err == nil {
		return nil
	}
	if len(wc.Peers) == 1 {
		return fmt.Errorf("configuring WireGuard device %s: peer %s: %w", d.name, nodeKey(wc.Peers[0].PublicKey), err)
	}
	if len(wc.Peers) == 0 {
		return fmt.Errorf("configuring WireGuard device %s: %w", d.name, err)
	}
	d.log.Warn("configuring WireGuard failed; retrying peer by peer", "err", err)
	if wc.PrivateKey != nil || wc.ListenPort != nil {
		dev := wgtypes.Config{PrivateKey: wc.PrivateKey, ListenPort: wc.ListenPort}
		if err := d.client.ConfigureDevice(d.name, dev); err != nil {
			return fmt.Errorf("configuring WireGuard device %s: %w", d.name, err)
		}
	}
	var errs []error
	for _, pc := range wc.Peers {
		if err := d.client.ConfigureDevice(d.name, wgtypes.Config{Peers: []wgtypes.PeerConfig{pc}}); err != nil {
			errs = append(errs, fmt.Errorf("configuring WireGuard device %s: peer %s: %w", d.name, nodeKey(pc.PublicKey), err))
		}
	}
	return errors.Join(errs...)
}

// plan returns the smallest wgtypes.Config that turns live into want. Removals come
// first (so that a prefix moving from a removed peer to a new one is never claimed
// twice), in key order; then additions and updates, in want's order.
func plan(live *wgtypes.Device, want Config, lastEndpoints map[key.NodePublic]netip.AddrPort) wgtypes.Config {
	var wc wgtypes.Config
	if pk := wgtypes.Key(want.PrivateKey.Raw()); live.PrivateKey != pk {
		wc.PrivateKey = &pk
	}
	if want.ListenPort != 0 && live.ListenPort != want.ListenPort {
		port := want.ListenPort
		wc.ListenPort = &port
	}
	wanted := map[wgtypes.Key]bool{}
	for _, p := range want.Peers {
		wanted[wgtypes.Key(p.PublicKey.Raw())] = true
	}
	livePeers := map[wgtypes.Key]*wgtypes.Peer{}
	var removed []wgtypes.Key
	for i := range live.Peers {
		lp := &live.Peers[i]
		livePeers[lp.PublicKey] = lp
		if !wanted[lp.PublicKey] {
			removed = append(removed, lp.PublicKey)
		}
	}
	slices.SortFunc(removed, func(a, b wgtypes.Key) int { return cmp.Compare(string(a[:]), string(b[:])) })
	for _, k := range removed {
		wc.Peers = append(wc.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
	}

	for _, p := range want.Peers {
		k := wgtypes.Key(p.PublicKey.Raw())
		ka := p.PersistentKeepalive.Truncate(time.Second)
		ep := normAddrPort(p.Endpoint)
		lp, ok := livePeers[k]
		if !ok {
			pc := wgtypes.PeerConfig{PublicKey: k, AllowedIPs: ipNets(p.AllowedIPs)}
			if ep.IsValid() {
				pc.Endpoint = net.UDPAddrFromAddrPort(ep)
			}
			if ka != 0 {
				pc.PersistentKeepaliveInterval = &ka
			}
			wc.Peers = append(wc.Peers, pc)
			continue
		}
		pc := wgtypes.PeerConfig{PublicKey: k, UpdateOnly: true}
		changed := false
		if !samePrefixes(lp.AllowedIPs, p.AllowedIPs) {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = ipNets(p.AllowedIPs)
			changed = true
		}
		if ep.IsValid() && ep != addrPortOf(lp.Endpoint) && lastEndpoints[p.PublicKey] != ep {
			pc.Endpoint = net.UDPAddrFromAddrPort(ep)
			changed = true
		}
		if ka != lp.PersistentKeepaliveInterval {
			pc.PersistentKeepaliveInterval = &ka
			changed = true
		}
		if changed {
			wc.Peers = append(wc.Peers, pc)
		}
	}
	return wc
}

// Stats returns the state of every peer, in key order.
func (d *Device) Stats() ([]PeerStats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	live, err := d.client.Device(d.name)
	if err != nil {
		return nil, fmt.Errorf("reading WireGuard device %s: %w", d.name, err)
	}
	out := make([]PeerStats, 0, len(live.Peers))
	for _, p := range live.Peers {
		s := PeerStats{
			PublicKey: nodeKey(p.PublicKey),
			Endpoint:  addrPortOf(p.Endpoint),
			RxBytes:   p.ReceiveBytes,
			TxBytes:   p.TransmitBytes,
		}
		if !p.LastHandshakeTime.IsZero() && p.LastHandshakeTime.Unix() != 0 {
			s.LastHandshake = p.LastHandshakeTime
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b PeerStats) int { return cmp.Compare(a.PublicKey.String(), b.PublicKey.String()) })
	return out, nil
}

func nodeKey(k wgtypes.Key) key.NodePublic { return key.NodePublicFromRaw(k) }

// normPrefix is p as WireGuard stores it: masked.
func normPrefix(p netip.Prefix) netip.Prefix { return p.Masked() }

// prefixOf converts an allowed IP read from the device; IPv4 may come in 16 bytes.
func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits == 0 {
		return netip.Prefix{}, false
	}
	if ip.Is4In6() && bits == 128 {
		ones -= 96
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ones).Masked(), ones <= ip.BitLen() && ones >= 0
}

func normAddrPort(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func addrPortOf(u *net.UDPAddr) netip.AddrPort {
	if u == nil {
		return netip.AddrPort{}
	}
	return normAddrPort(u.AddrPort())
}

func ipNets(ps []netip.Prefix) []net.IPNet {
	out := make([]net.IPNet, 0, len(ps))
	for _, p := range ps {
		p = normPrefix(p)
		out = append(out, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	return out
}

// samePrefixes reports whether the device's allowed IPs are the set want.
func samePrefixes(live []net.IPNet, want []netip.Prefix) bool {
	a := make([]netip.Prefix, 0, len(live))
	for _, n := range live {
		p, ok := prefixOf(n)
		if !ok {
			return false
		}
		a = append(a, p)
	}
	b := make([]netip.Prefix, 0, len(want))
	for _, p := range want {
		b = append(b, normPrefix(p))
	}
	order := func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(x.Bits(), y.Bits())
	}
	slices.SortFunc(a, order)
	slices.SortFunc(b, order)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
