package apiclient

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/cvlan/cvlan/controlplane/apiv1"
)

// fingerprintPrefix starts every fingerprint; the hash is the only one supported.
const fingerprintPrefix = "sha256:"

// Fingerprint returns "sha256:<lowercase hex>" of a certificate's DER bytes: the form
// the controller prints on first start and cvlanctl pins.
// It is apiv1.Fingerprint, repeated here so that callers of the client need only
// this package.
func Fingerprint(der []byte) string { return apiv1.Fingerprint(der) }

// NormalizeFingerprint checks a fingerprint and returns it in the form Fingerprint
// prints. It accepts upper-case hex and the colon-separated form openssl prints
// ("sha256:AB:CD:…").
func NormalizeFingerprint(s string) (string, error) {
	sum, err := parseFingerprint(s)
	if err != nil {
		return "", err
	}
	return fingerprintPrefix + hex.EncodeToString(sum), nil
}

func parseFingerprint(s string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(s)), fingerprintPrefix)
	if !ok {
		return nil, fmt.Errorf("fingerprint: %q does not start with %q", clip(s), fingerprintPrefix)
	}
	sum, err := hex.DecodeString(strings.ReplaceAll(hexPart, ":", ""))
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("fingerprint: %q is not sha256: followed by %d hex digits", clip(s), 2*sha256.Size)
	}
	return sum, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// FingerprintMismatchError says the server presented a certificate other than the
// pinned one: it was replaced, or this is not the server that was pinned.
type FingerprintMismatchError struct {
	Pinned    string // the fingerprint the client trusts
	Presented string // the fingerprint of the certificate the server showed
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("server certificate fingerprint changed: pinned %s, server presented %s; "+
		"refusing to connect (if the certificate was replaced on purpose, check the new fingerprint "+
		"with the controller's operator and log in again with --fingerprint)", e.Pinned, e.Presented)
}

// pinTo makes tc accept exactly the leaf certificate whose SHA-256 is want. Chain
// and host name checks are replaced by the pin, as with an SSH known host: the pin
// is stronger than either, and the controller's certificate is self-signed.
func pinTo(tc *tls.Config, want []byte) {
	tc.InsecureSkipVerify = true
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server presented no certificate")
		}
		got := sha256.Sum256(cs.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return &FingerprintMismatchError{
				Pinned:    fingerprintPrefix + hex.EncodeToString(want),
				Presented: fingerprintPrefix + hex.EncodeToString(got[:]),
			}
		}
		return nil
	}
}

// FetchFingerprint connects to server without verifying its certificate and returns
// the fingerprint of the certificate it presents. The answer proves nothing by
// itself: show it to a person to compare with the one the controller printed (trust
// on first use), then pin it.
func FetchFingerprint(ctx context.Context, server string) (string, error) {
	base, err := ParseServer(server)
	if err != nil {
		return "", err
	}
	u, _ := url.Parse(base) // ParseServer built it
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	d := tls.Dialer{Config: &tls.Config{
		InsecureSkipVerify: true, // we only read the certificate, nothing is sent
		ServerName:         u.Hostname(),
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("fetching the certificate of %s: %w", addr, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", fmt.Errorf("fetching the certificate of %s: server presented none", addr)
	}
	return Fingerprint(certs[0].Raw), nil
}
