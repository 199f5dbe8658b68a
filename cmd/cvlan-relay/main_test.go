package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{nil, {"--help"}, {"help"}, {"serve", "--help"}, {"key", "-h"}, {"version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 || out.Len() == 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	if code := run([]string{"serve", "--xdp", "fast"}, &out, &errb); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
}

func TestKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "relay")
	var first, second, errb bytes.Buffer
	if code := run([]string{"key", "--data-dir", dir}, &first, &errb); code != 0 {
		t.Fatalf("key: exit %d: %s", code, errb.String())
	}
	if code := run([]string{"key", "--data-dir", dir}, &second, &errb); code != 0 {
		t.Fatalf("key: exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(first.String(), "relaykey:") || first.String() != second.String() {
		t.Fatalf("key printed %q then %q", first.String(), second.String())
	}
}

// TestConfigPrecedence checks file < environment < flags.
func TestConfigPrecedence(t *testing.T) {
	p := filepath.Join(t.TempDir(), "relay.yaml")
	yaml := "relay_address: 192.0.2.1\nstun:\n  listen: \":1\"\nframed:\n  drain_grace: 1s\nlog:\n  level: warn\n"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CVLAN_RELAY_STUN_LISTEN", ":2")
	t.Setenv("CVLAN_RELAY_DRAIN_GRACE", "2s")
	fs, _, set := serveFlags(&bytes.Buffer{})
	if err := fs.Parse([]string{"--stun-listen", ":3"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config(p, *set)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.STUNListen != ":3" || cfg.DrainGrace != 2*time.Second || cfg.LogLevel != "warn" || cfg.RelayAddress.String() != "192.0.2.1" {
		t.Fatalf("config: %+v", cfg)
	}
	if _, err := config(p+".missing", nil); err == nil {
		t.Fatal("missing config file accepted")
	}
}
