package key

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// PrivatePrefix identifies a private key in text form (key files only; private keys
// are never logged, stored in the database or sent anywhere).
const PrivatePrefix = "privkey:"

// Private is a Curve25519 private key: a Noise static key (machine key) or a
// WireGuard private key (node key). Its String never shows the key.
type Private struct{ k raw }

// NewPrivate makes a random private key, clamped as WireGuard and Noise expect.
func NewPrivate() (Private, error) {
	var p Private
	if _, err := rand.Read(p.k[:]); err != nil {
		return Private{}, fmt.Errorf("generating private key: %w", err)
	}
	p.k[0] &= 248
	p.k[31] = (p.k[31] & 127) | 64
	return p, nil
}

// IsZero reports whether p is unset.
func (p Private) IsZero() bool { return p.k.isZero() }

// Raw is the key's bytes.
func (p Private) Raw() [Len]byte { return p.k }

// String hides the key.
func (p Private) String() string { return "privkey:(hidden)" }

func (p Private) public() raw {
	pub, err := curve25519.X25519(p.k[:], curve25519.Basepoint)
	if err != nil {
		return raw{}
	}
	return raw(pub)
}

// MachinePublic is p's public half as a machine key.
func (p Private) MachinePublic() MachinePublic { return MachinePublic{p.public()} }

// NodePublic is p's public half as a node key.
func (p Private) NodePublic() NodePublic { return NodePublic{p.public()} }

// RelayPublic is the public half as a relay key.
func (p Private) RelayPublic() RelayPublic { return RelayPublic{p.public()} }

// Text is the key file form, "privkey:" and 64 hex digits.
func (p Private) Text() string { return PrivatePrefix + hex.EncodeToString(p.k[:]) }

// ParsePrivate reads the key file form.
func ParsePrivate(s string) (Private, error) {
	// parse's errors quote the input, which must not happen to a private key.
	r, err := parse(PrivatePrefix, strings.TrimSpace(s))
	if errors.Is(err, ErrZero) {
		return Private{}, fmt.Errorf("private key: %w", err)
	}
	if err != nil {
		return Private{}, fmt.Errorf("not a private key (%q and %d hex digits)", PrivatePrefix, 2*Len)
	}
	return Private{r}, nil
}

// LoadOrCreatePrivate reads the private key in path, creating it (0600, parent
// 0700) when the file does not exist. created reports a new key.
func LoadOrCreatePrivate(path string) (p Private, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if p, err = NewPrivate(); err != nil {
			return Private{}, false, err
		}
		return p, true, WritePrivate(path, p)
	}
	if err != nil {
		return Private{}, false, fmt.Errorf("reading key file: %w", err)
	}
	if p, err = ParsePrivate(string(data)); err != nil {
		return Private{}, false, fmt.Errorf("%s: %w", path, err)
	}
	return p, false, nil
}

// WritePrivate replaces the key file at path atomically, readable by its owner only.
func WritePrivate(path string, p Private) error {
	return WriteFileAtomic(path, []byte(p.Text()+"\n"), 0o600)
}

// WriteFileAtomic writes data to path through a synced temporary file and a
// rename, so a crash leaves the old file or the new one, never a torn one. The
// directory is created 0700 if missing.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
