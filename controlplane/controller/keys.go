package controller

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

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Files in the data directory.
const (
	certFile  = "tls.crt"
	keyFile   = "tls.key"
	noiseFile = "noise.key"
)

// loadOrCreateTLS returns the configured certificate, or the self-signed one in the
// data directory, creating it on first start. created reports a new certificate.
func loadOrCreateTLS(cfg *Config) (cert tls.Certificate, created bool, err error) {
	certPath, keyPath := cfg.TLSCert, cfg.TLSKey
	if certPath == "" {
		certPath, keyPath = filepath.Join(cfg.DataDir, certFile), filepath.Join(cfg.DataDir, keyFile)
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

func writeSelfSigned(certPath, keyPath string, names []string) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "cvlan-controller"},
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
		return err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// writeFile writes a file readable only by its owner, atomically.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// NoiseKey is the controller's Noise static key pair.
type NoiseKey struct {
	Private [32]byte
	Public  key.MachinePublic
}

// DHKey returns the key in flynn/noise's form.
func (k NoiseKey) DHKey() noise.DHKey {
	pub := k.Public.Raw()
	return noise.DHKey{Private: k.Private[:], Public: pub[:]}
}

// loadOrCreateNoiseKey reads the data directory's Noise key, creating it on first start.
func loadOrCreateNoiseKey(dir string) (NoiseKey, error) {
	p, _, err := key.LoadOrCreatePrivate(filepath.Join(dir, noiseFile))
	if err != nil {
		return NoiseKey{}, fmt.Errorf("Noise key: %w", err)
	}
	return NoiseKey{Private: p.Raw(), Public: p.MachinePublic()}, nil
}
