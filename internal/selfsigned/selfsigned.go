// Package selfsigned gives a daemon its HTTPS certificate: the one the operator
// configured, or a self-signed one it creates in its data directory on first
// start. Clients of cvlan's daemons pin a fingerprint or a Noise key, so the
// self-signed certificate needs no CA. It never overwrites an existing file.
package selfsigned

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

// Files created in the data directory.
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// Load returns the certificate at certPath/keyPath, or, when certPath is empty,
// the self-signed one in dataDir, creating it on first start for commonName,
// localhost, the host name and names (host names or IP addresses). created
// reports a new certificate.
func Load(certPath, keyPath, dataDir, commonName string, names []string) (cert tls.Certificate, created bool, err error) {
	if certPath == "" {
		certPath, keyPath = filepath.Join(dataDir, CertFile), filepath.Join(dataDir, KeyFile)
		if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
			if err := write(certPath, keyPath, commonName, names); err != nil {
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

// write creates a ten-year ECDSA P-256 certificate and its key, both 0600.
func write(certPath, keyPath, commonName string, names []string) error {
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
		Subject:               pkix.Name{CommonName: commonName},
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
		return err
	}
	return key.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}
