// Package key holds the typed public keys of cvlan: machine keys (Noise static keys
// that authenticate a node to the controller), node keys (WireGuard keys) and relay
// keys. Each type prints with its own prefix so keys of different kinds are never
// confused in logs, configs or the database. It never touches private key material
// other than through the explicit private types.
package key

import (
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Len is the length of every public key in bytes (Curve25519).
const Len = 32

// Prefixes that identify the kind of key in text form.
const (
	MachinePrefix = "mkey:"
	NodePrefix    = "nodekey:"
	RelayPrefix   = "relaykey:"
)

// ErrZero is returned when parsing the all-zero key, which is never valid.
var ErrZero = errors.New("key is all zeros")

type raw [Len]byte

func (r raw) isZero() bool {
	var z raw
	return subtle.ConstantTimeCompare(r[:], z[:]) == 1
}

func (r raw) equal(o raw) bool { return subtle.ConstantTimeCompare(r[:], o[:]) == 1 }

func parse(prefix, s string) (raw, error) {
	var r raw
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return r, fmt.Errorf("key %q: want prefix %q", truncate(s), prefix)
	}
	if len(rest) != 2*Len {
		return r, fmt.Errorf("key %q: want %d hex digits after %q, got %d", truncate(s), 2*Len, prefix, len(rest))
	}
	if _, err := hex.Decode(r[:], []byte(rest)); err != nil {
		return r, fmt.Errorf("key %q: %w", truncate(s), err)
	}
	if r.isZero() {
		return r, ErrZero
	}
	return r, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// MachinePublic is a node's Noise static public key.
type MachinePublic struct{ k raw }

// NodePublic is a node's WireGuard public key.
type NodePublic struct{ k raw }

// RelayPublic is a relay's public key.
type RelayPublic struct{ k raw }

// MachinePublicFromRaw wraps raw key bytes.
func MachinePublicFromRaw(b [Len]byte) MachinePublic { return MachinePublic{raw(b)} }

// NodePublicFromRaw wraps raw key bytes.
func NodePublicFromRaw(b [Len]byte) NodePublic { return NodePublic{raw(b)} }

// RelayPublicFromRaw wraps raw key bytes.
func RelayPublicFromRaw(b [Len]byte) RelayPublic { return RelayPublic{raw(b)} }

// ParseMachinePublic parses "mkey:<64 hex digits>".
func ParseMachinePublic(s string) (MachinePublic, error) {
	r, err := parse(MachinePrefix, s)
	return MachinePublic{r}, err
}

// ParseNodePublic parses "nodekey:<64 hex digits>".
func ParseNodePublic(s string) (NodePublic, error) {
	r, err := parse(NodePrefix, s)
	return NodePublic{r}, err
}

// ParseRelayPublic parses "relaykey:<64 hex digits>".
func ParseRelayPublic(s string) (RelayPublic, error) {
	r, err := parse(RelayPrefix, s)
	return RelayPublic{r}, err
}

// Raw returns the key bytes.
func (k MachinePublic) Raw() [Len]byte { return k.k }

// Raw returns the key bytes.
func (k NodePublic) Raw() [Len]byte { return k.k }

// Raw returns the key bytes.
func (k RelayPublic) Raw() [Len]byte { return k.k }

// IsZero reports whether k is unset.
func (k MachinePublic) IsZero() bool { return k.k.isZero() }

// IsZero reports whether k is unset.
func (k NodePublic) IsZero() bool { return k.k.isZero() }

// IsZero reports whether k is unset.
func (k RelayPublic) IsZero() bool { return k.k.isZero() }

// Equal compares in constant time.
func (k MachinePublic) Equal(o MachinePublic) bool { return k.k.equal(o.k) }

// Equal compares in constant time.
func (k NodePublic) Equal(o NodePublic) bool { return k.k.equal(o.k) }

// Equal compares in constant time.
func (k RelayPublic) Equal(o RelayPublic) bool { return k.k.equal(o.k) }

func (k MachinePublic) String() string { return str(MachinePrefix, k.k) }
func (k NodePublic) String() string    { return str(NodePrefix, k.k) }
func (k RelayPublic) String() string   { return str(RelayPrefix, k.k) }

func str(prefix string, r raw) string {
	if r.isZero() {
		return ""
	}
	return prefix + hex.EncodeToString(r[:])
}

// MarshalText implements encoding.TextMarshaler; the zero key is the empty string.
func (k MachinePublic) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// MarshalText implements encoding.TextMarshaler; the zero key is the empty string.
func (k NodePublic) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// MarshalText implements encoding.TextMarshaler; the zero key is the empty string.
func (k RelayPublic) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; the empty string is the zero key.
func (k *MachinePublic) UnmarshalText(b []byte) error {
	return unmarshal(&k.k, MachinePrefix, b)
}

// UnmarshalText implements encoding.TextUnmarshaler; the empty string is the zero key.
func (k *NodePublic) UnmarshalText(b []byte) error { return unmarshal(&k.k, NodePrefix, b) }

// UnmarshalText implements encoding.TextUnmarshaler; the empty string is the zero key.
func (k *RelayPublic) UnmarshalText(b []byte) error { return unmarshal(&k.k, RelayPrefix, b) }

func unmarshal(dst *raw, prefix string, b []byte) error {
	if len(b) == 0 {
		*dst = raw{}
		return nil
	}
	r, err := parse(prefix, string(b))
	if err != nil {
		return err
	}
	*dst = r
	return nil
}
