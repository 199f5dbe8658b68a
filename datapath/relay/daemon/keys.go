package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Files in the data directory.
const (
	KeyFile     = "relay.key"
	certFile    = "tls.crt"
	certKeyFile = "tls.key"
)

// LoadOrCreateKey reads the relay's static key from dataDir/relay.key, creating the
// directory (0700) and the key (0600) on first use. created reports a new key.
func LoadOrCreateKey(dataDir string) (priv key.Private, created bool, err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return key.Private{}, false, fmt.Errorf("creating data directory: %w", err)
	}
	priv, created, err = key.LoadOrCreatePrivate(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return key.Private{}, false, fmt.Errorf("relay key: %w", err)
	}
	return priv, created, nil
}

// RelayPublic is the public half of a relay key, as clients pin it and as
// `cvlanctl relay create --relay-key` takes it.
func RelayPublic(priv key.Private) key.RelayPublic {
	return key.RelayPublicFromRaw(priv.MachinePublic().Raw())
}

// loadOrCreateTLS returns the configured certificate, or the self-signed one in the
// data directory, creating it on first start. created reports a new certificate.
func loadOrCreateTLS(cfg *Config) (cert tls.Certificate, created bool, err error) {
	certPath, keyPath := cfg.TLSCert, cfg.TLSKey
	if certPath == "" {
		certPath, keyPath = filepath.Join(cfg.DataDir, certFile), filepath.Join(cfg.DataDir, certKeyFile)
		if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
			if err := writeSelfSigned(certPath, keyPath, cfg.TLSNames); err != nil {
				return cert, false, err
			}
			created = true
		}
	}
	cert, err = tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return cert, false, fmt.Errorf("loading TLS certificate %s: %w", certPath, err)
	}
	return cert, created, nil
}

// writeSelfSigned writes a ten-year ECDSA certificate for localhost, the host name
// and names. Clients do not need to verify it: the Noise handshake authenticates the
// relay by its pinned key.
func writeSelfSigned(certPath, keyPath string, names []string) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("creating self-signed certificate: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("creating self-signed certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "cvlan-relay"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return fmt.Errorf("creating self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encoding the certificate key: %w", err)
	}
	if err := key.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", keyPath, err)
	}
	if err := key.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", certPath, err)
	}
	return nil
}
