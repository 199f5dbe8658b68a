package netmap

import (
	"fmt"
	"net/netip"
	"net/url"

	"github.com/cvlan/cvlan/controlplane/controlpb"
	"github.com/cvlan/cvlan/controlplane/key"
)

// Relay is one relay server of the relay map.
type Relay struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Region   string          `json:"region,omitempty"`
	Addr     netip.Addr      `json:"addr,omitzero"`
	STUNPort uint16          `json:"stun_port,omitempty"`
	TLSURL   string          `json:"tls_url,omitempty"`
	WSURL    string          `json:"ws_url,omitempty"`
	Key      key.RelayPublic `json:"relay_key,omitzero"`
}

// Path modes of a RelayPath.
const (
	PathUDP    = 1 // a UDP relay session
	PathFramed = 2 // the framed relay (TLS, then WebSocket)
)

// RelayPath is how the node reaches a peer through a relay (see
// controlpb.RelayPath). The token is this node's secret for the session.
type RelayPath struct {
	Mode    int      `json:"mode"`
	RelayID string   `json:"relay_id"`
	Session uint64   `json:"session,omitempty"`
	Side    uint8    `json:"side,omitempty"`
	Port    uint16   `json:"port,omitempty"`
	Token   [32]byte `json:"token,omitzero"`
}

// Relay returns the relay with the ID, or nil.
func (m *Map) Relay(id string) *Relay {
	for i := range m.Relays {
		if m.Relays[i].ID == id {
			return &m.Relays[i]
		}
	}
	return nil
}

const maxRelays = 256

// RelaysFromProto checks and converts a relay list; field names it in errors.
func RelaysFromProto(field string, rs []*controlpb.RelayInfo) ([]Relay, error) {
	if len(rs) > maxRelays {
		return nil, fmt.Errorf("%s: %d relays is more than %d", field, len(rs), maxRelays)
	}
	out := make([]Relay, 0, len(rs))
	seen := map[string]bool{}
	for i, pr := range rs {
		r := Relay{ID: pr.GetId(), Name: pr.GetName(), Region: pr.GetRegion(), TLSURL: pr.GetTlsUrl(), WSURL: pr.GetWsUrl()}
		at := fmt.Sprintf("%s[%d]", field, i)
		if r.ID == "" || seen[r.ID] {
			return nil, fmt.Errorf("%s.id: %q is empty or appears twice", at, r.ID)
		}
		seen[r.ID] = true
		if pr.GetStunPort() > 65535 {
			return nil, fmt.Errorf("%s.stun_port: %d is not a port", at, pr.GetStunPort())
		}
		r.STUNPort = uint16(pr.GetStunPort())
		if a := pr.GetAddress(); a != "" {
			addr, err := netip.ParseAddr(a)
			if err != nil {
				return nil, fmt.Errorf("%s.address: %q is not an IP address", at, a)
			}
			r.Addr = addr
		}
		for _, u := range []struct{ name, v, scheme string }{{"tls_url", r.TLSURL, "https"}, {"ws_url", r.WSURL, "wss"}} {
			if u.v == "" {
				continue
			}
			if p, err := url.Parse(u.v); err != nil || p.Scheme != u.scheme || p.Host == "" {
				return nil, fmt.Errorf("%s.%s: %q is not a %s:// URL", at, u.name, u.v, u.scheme)
			}
		}
		if b := pr.GetRelayKey(); len(b) > 0 {
			if len(b) != key.Len {
				return nil, fmt.Errorf("%s.relay_key: %d bytes, want %d", at, len(b), key.Len)
			}
			r.Key = key.RelayPublicFromRaw([key.Len]byte(b))
		}
		out = append(out, r)
	}
	return out, nil
}

func relayPathFromProto(rp *controlpb.RelayPath) (*RelayPath, error) {
	if rp == nil {
		return nil, nil
	}
	p := &RelayPath{Mode: int(rp.GetMode()), RelayID: rp.GetRelayId()}
	if p.RelayID == "" {
		return nil, fmt.Errorf("relay.relay_id: empty")
	}
	switch p.Mode {
	case PathUDP:
		if rp.GetSide() > 1 {
			return nil, fmt.Errorf("relay.side: %d is not 0 (A) or 1 (B)", rp.GetSide())
		}
		if rp.GetPort() == 0 || rp.GetPort() > 65535 {
			return nil, fmt.Errorf("relay.port: %d is not a port", rp.GetPort())
		}
		if len(rp.GetToken()) != len(p.Token) {
			return nil, fmt.Errorf("relay.token: %d bytes, want %d", len(rp.GetToken()), len(p.Token))
		}
		p.Session, p.Side, p.Port = rp.GetSessionId(), uint8(rp.GetSide()), uint16(rp.GetPort())
		copy(p.Token[:], rp.GetToken())
		if p.Token == [32]byte{} {
			return nil, fmt.Errorf("relay.token: all zero")
		}
	case PathFramed:
	default:
		return nil, fmt.Errorf("relay.mode: %d is not 1 (UDP) or 2 (framed)", rp.GetMode())
	}
	return p, nil
}
