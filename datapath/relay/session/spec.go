package session

import (
	"crypto/subtle"
	"errors"
	"fmt"
)

// ID identifies a session; the controller allocates it.
type ID uint64

func (id ID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// Side is one end of a session.
type Side uint8

// The two sides of a session.
const (
	SideA Side = 0
	SideB Side = 1
)

// Other returns the opposite side.
func (s Side) Other() Side { return s ^ 1 }

// Valid reports whether s is SideA or SideB.
func (s Side) Valid() bool { return s <= SideB }

func (s Side) String() string {
	switch s {
	case SideA:
		return "a"
	case SideB:
		return "b"
	}
	return fmt.Sprintf("side(%d)", uint8(s))
}

// TokenSize is the length of a side's token.
const TokenSize = 32

// Token is one side's secret for a session: the key of its bind packets' MACs.
type Token [TokenSize]byte

// Equal compares two tokens in constant time.
func (t *Token) Equal(o *Token) bool { return subtle.ConstantTimeCompare(t[:], o[:]) == 1 }

// IsZero reports whether t is all zero bytes (never a valid token).
func (t *Token) IsZero() bool {
	var z Token
	return t.Equal(&z)
}

// String never prints the secret.
func (t Token) String() string { return "token(redacted)" }

// Spec is a session as the controller issues it to a relay.
type Spec struct {
	ID     ID
	Ports  [2]uint16 // the relay's UDP port per side, indexed by Side
	Tokens [2]Token  // each side's token, indexed by Side
}

// ErrInvalidSpec is wrapped by the errors of [Spec.Validate] and [Table.Diff].
var ErrInvalidSpec = errors.New("invalid session spec")

// Validate checks that the spec can be served: two distinct non-zero ports and two
// non-zero, distinct tokens.
func (s *Spec) Validate() error {
	switch {
	case s.Ports[SideA] == 0 || s.Ports[SideB] == 0:
		return fmt.Errorf("%w: session %s: port 0", ErrInvalidSpec, s.ID)
	case s.Ports[SideA] == s.Ports[SideB]:
		return fmt.Errorf("%w: session %s: both sides on port %d", ErrInvalidSpec, s.ID, s.Ports[SideA])
	case s.Tokens[SideA].IsZero() || s.Tokens[SideB].IsZero():
		return fmt.Errorf("%w: session %s: zero token", ErrInvalidSpec, s.ID)
	case s.Tokens[SideA].Equal(&s.Tokens[SideB]):
		return fmt.Errorf("%w: session %s: both sides have the same token", ErrInvalidSpec, s.ID)
	}
	return nil
}

// Equal reports whether two specs are the same session (tokens compared in constant
// time).
func (s *Spec) Equal(o *Spec) bool {
	return s.ID == o.ID && s.Ports == o.Ports &&
		s.Tokens[SideA].Equal(&o.Tokens[SideA]) && s.Tokens[SideB].Equal(&o.Tokens[SideB])
}
