package model

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// ID prefixes, one per object kind, so an ID says what it names and can never be
// mistaken for a name (names have no '_').
const (
	PrefixTenant  = "tn_"
	PrefixNetwork = "nw_"
	PrefixNode    = "nd_"
	PrefixKey     = "ek_"
	PrefixToken   = "tk_"
	PrefixRelay   = "rl_"
	PrefixSite    = "st_"
	PrefixAudit   = "au_"
)

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b32.EncodeToString(b)
}

// NewID returns a fresh random ID with the given prefix.
func NewID(prefix string) string { return prefix + random(10) }

// IsID reports whether ref looks like an ID rather than a name.
func IsID(ref string) bool { return strings.Contains(ref, "_") }

// NewSecret returns a secret for the object id ("<id>.<random>") and its stored hash.
func NewSecret(id string) (secret, hash string) {
	secret = id + "." + random(20)
	return secret, HashSecret(secret)
}

// HashSecret is the stored form of a secret.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// SecretID returns the object ID carried by a secret.
func SecretID(secret string) (string, bool) {
	id, _, ok := strings.Cut(secret, ".")
	return id, ok && id != ""
}

// SecretMatches compares a presented secret with a stored hash in constant time.
func SecretMatches(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(hash)) == 1
}

// NewAuditID returns an audit entry ID that sorts by time: entries written later
// have IDs that compare greater as strings.
func NewAuditID(atUnixNano int64) string {
	const hexdigits = "0123456789abcdef"
	var ts [16]byte
	for i := 15; i >= 0; i-- {
		ts[i] = hexdigits[atUnixNano&0xf]
		atUnixNano >>= 4
	}
	return PrefixAudit + string(ts[:]) + random(5)
}
