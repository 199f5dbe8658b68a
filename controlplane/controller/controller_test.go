package controller

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestInitOnceThenServe(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Listen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Init(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "operator-token: tk_") || !strings.Contains(out.String(), "tls-fingerprint: sha256:") {
		t.Fatalf("init printed no token or fingerprint:\n%s", out.String())
	}
	var again bytes.Buffer
	if err := Init(context.Background(), cfg, &again); err == nil || strings.Contains(again.String(), "operator-token:") {
		t.Fatalf("second init: err=%v, printed %q; want an error and no new token", err, again.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Get("https://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Database.Driver = "mysql" }, "database.driver"},
		{func(c *Config) { c.Listen = "nowhere" }, "listen"},
		{func(c *Config) { c.TLSCert = "x.crt" }, "tls_key"},
		{func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{func(c *Config) { c.Database = Database{Driver: "postgres", DSN: "host=x"} }, "database.dsn"},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
		}
	}
	c := DefaultConfig()
	if err := c.parseYAML("test.yaml", []byte("listen: ':1'\nbogus: 1\n")); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown YAML key: %v", err)
	}
}

func FuzzConfigYAML(f *testing.F) {
	f.Add([]byte("data_dir: /tmp/x\ndatabase:\n  driver: sqlite\n"))
	f.Add([]byte("listen: [1, 2]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := DefaultConfig()
		if c.parseYAML("fuzz.yaml", data) == nil {
			c.Validate()
		}
	})
}
