package wg

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/cvlan/cvlan/controlplane/key"
)

// fakeClient is an in-memory WireGuard device behind the client interface. It is
// stricter than WireGuard: adding a peer that exists, or updating or removing one that
// does not, is an error, so a wrong diff cannot pass unnoticed. Every configuration it
// applies is written to its transcript.
type fakeClient struct {
	name       string
	dev        wgtypes.Device
	transcript []string
	refuse     map[wgtypes.Key]bool // configurations touching these peers fail
}

var _ client = (*fakeClient)(nil)

func newFake(name string) *fakeClient {
	return &fakeClient{name: name, dev: wgtypes.Device{Name: name, Type: wgtypes.Userspace}}
}

// newTestDevice returns a Device over a fake, as Open would over wgctrl.
func newTestDevice(f *fakeClient) *Device {
	return &Device{
		name: f.name, impl: ImplUserspace, client: f,
		log: slog.New(slog.DiscardHandler), endpoints: map[key.NodePublic]netip.AddrPort{},
	}
}

func (f *fakeClient) Close() error { return nil }

func (f *fakeClient) Device(name string) (*wgtypes.Device, error) {
	if name != f.name {
		return nil, os.ErrNotExist
	}
	d := f.dev
	d.Peers = clonePeers(f.dev.Peers)
	return &d, nil
}

func clonePeers(ps []wgtypes.Peer) []wgtypes.Peer {
	out := slices.Clone(ps)
	for i := range out {
		out[i].AllowedIPs = slices.Clone(out[i].AllowedIPs)
	}
	return out
}

func (f *fakeClient) ConfigureDevice(name string, cfg wgtypes.Config) error {
	if name != f.name {
		return os.ErrNotExist
	}
	if cfg.ReplacePeers {
		return errors.New("fake: ReplacePeers used")
	}
	for _, pc := range cfg.Peers {
		if f.refuse[pc.PublicKey] {
			return fmt.Errorf("fake: device refuses peer %s", short(pc.PublicKey))
		}
	}
	next := f.dev
	next.Peers = clonePeers(f.dev.Peers)
	var lines []string
	if cfg.PrivateKey != nil || cfg.ListenPort != nil {
		line := "set"
		if cfg.PrivateKey != nil {
			next.PrivateKey, next.PublicKey = *cfg.PrivateKey, cfg.PrivateKey.PublicKey()
			line += " private-key=(public " + short(next.PublicKey) + ")"
		}
		if cfg.ListenPort != nil {
			next.ListenPort = *cfg.ListenPort
			line += fmt.Sprintf(" listen-port=%d", *cfg.ListenPort)
		}
		lines = append(lines, line)
	}
	for _, pc := range cfg.Peers {
		i := slices.IndexFunc(next.Peers, func(p wgtypes.Peer) bool { return p.PublicKey == pc.PublicKey })
		line := "peer " + short(pc.PublicKey)
		switch {
		case pc.Remove:
			if i < 0 {
				return fmt.Errorf("fake: removing missing peer %s", short(pc.PublicKey))
			}
			next.Peers = slices.Delete(next.Peers, i, i+1)
			lines = append(lines, line+" remove")
			continue
		case pc.UpdateOnly:
			if i < 0 {
				return fmt.Errorf("fake: updating missing peer %s", short(pc.PublicKey))
			}
			line += " update"
		default:
			if i >= 0 {
				return fmt.Errorf("fake: adding existing peer %s", short(pc.PublicKey))
			}
			next.Peers = append(next.Peers, wgtypes.Peer{PublicKey: pc.PublicKey})
			i = len(next.Peers) - 1
			line += " add"
		}
		p := &next.Peers[i]
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
			line += " endpoint=" + pc.Endpoint.String()
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		if pc.ReplaceAllowedIPs || len(pc.AllowedIPs) > 0 {
			var s []string
			for _, n := range pc.AllowedIPs {
				s = append(s, n.String())
			}
			line += " allowed-ips=" + strings.Join(s, ",")
		}
		for _, n := range pc.AllowedIPs {
			// An allowed IP belongs to one peer: it moves.
			for j := range next.Peers {
				next.Peers[j].AllowedIPs = slices.DeleteFunc(next.Peers[j].AllowedIPs, func(o net.IPNet) bool { return o.String() == n.String() })
			}
			p.AllowedIPs = append(p.AllowedIPs, n)
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
			if *pc.PersistentKeepaliveInterval == 0 {
				line += " keepalive=off"
			} else {
				line += " keepalive=" + pc.PersistentKeepaliveInterval.String()
			}
		}
		lines = append(lines, line)
	}
	f.dev = next
	f.transcript = append(f.transcript, lines...)
	return nil
}

// roam changes a peer's endpoint as WireGuard does when the peer's packets come from
// a new address.
func (f *fakeClient) roam(k key.NodePublic, ep string) {
	for i := range f.dev.Peers {
		if f.dev.Peers[i].PublicKey == wgtypes.Key(k.Raw()) {
			f.dev.Peers[i].Endpoint = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ep))
		}
	}
}

// check returns how the fake device differs from cfg, or "".
func (f *fakeClient) check(cfg Config) string {
	var diffs []string
	if f.dev.PrivateKey != wgtypes.Key(cfg.PrivateKey.Raw()) {
		diffs = append(diffs, "private key differs")
	}
	if cfg.ListenPort != 0 && f.dev.ListenPort != cfg.ListenPort {
		diffs = append(diffs, fmt.Sprintf("listen port %d, want %d", f.dev.ListenPort, cfg.ListenPort))
	}
	got := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range f.dev.Peers {
		got[p.PublicKey] = p
	}
	for _, w := range cfg.Peers {
		k := wgtypes.Key(w.PublicKey.Raw())
		g, ok := got[k]
		if !ok {
			diffs = append(diffs, "missing peer "+short(k))
			continue
		}
		delete(got, k)
		if !samePrefixes(g.AllowedIPs, w.AllowedIPs) {
			diffs = append(diffs, fmt.Sprintf("peer %s: allowed IPs %v, want %v", short(k), g.AllowedIPs, w.AllowedIPs))
		}
		if w.Endpoint.IsValid() && addrPortOf(g.Endpoint) != w.Endpoint {
			diffs = append(diffs, fmt.Sprintf("peer %s: endpoint %v, want %v", short(k), g.Endpoint, w.Endpoint))
		}
		if g.PersistentKeepaliveInterval != w.PersistentKeepalive.Truncate(1e9) {
			diffs = append(diffs, fmt.Sprintf("peer %s: keepalive %v, want %v", short(k), g.PersistentKeepaliveInterval, w.PersistentKeepalive))
		}
	}
	for k := range got {
		diffs = append(diffs, "extra peer "+short(k))
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "; ")
}

// short abbreviates a public key for transcripts: "nodekey:" and 8 hex digits.
func short(k wgtypes.Key) string { return key.NodePrefix + hex.EncodeToString(k[:4]) }

// testKey returns a fixed private key made from n.
func testKey(n byte) key.Private {
	var b [key.Len]byte
	for i := range b {
		b[i] = n + byte(i)
	}
	b[0] &= 248
	b[31] = (b[31] & 127) | 64
	k, err := key.ParsePrivate(key.PrivatePrefix + hex.EncodeToString(b[:]))
	if err != nil {
		panic(err)
	}
	return k
}
