package ctl

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/controlplane/apiclient"
)

func TestLogin(t *testing.T) {
	h := newHarness(t)
	h.login()

	st, err := os.Stat(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", st.Mode().Perm())
	}
	dir, _ := os.Stat(filepath.Dir(h.cfg))
	if dir.Mode().Perm() != 0o700 {
		t.Errorf("config directory mode %v, want 0700", dir.Mode().Perm())
	}
	cfg, err := loadConfig(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := fileConfig{Server: h.ctl.URL, Token: h.ctl.OperatorToken, Fingerprint: h.ctl.Fingerprint}
	if cfg != want {
		t.Errorf("saved %+v, want %+v", cfg, want)
	}
	// The saved login is enough for the other commands.
	h.ok("tenant", "list")

	h.ok("logout")
	if _, err := os.Stat(h.cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("logout left the config: %v", err)
	}
	if errs := h.fail(1, "tenant", "list"); !strings.Contains(errs, "not logged in") {
		t.Errorf("after logout: %q", errs)
	}
}

func TestLoginWrongFingerprintRefused(t *testing.T) {
	h := newHarness(t)
	wrong := "sha256:" + strings.Repeat("0", 64)
	errs := h.fail(1, "login", "--server", h.ctl.URL, "--token", h.ctl.OperatorToken, "--fingerprint", wrong)
	if !strings.Contains(errs, "fingerprint changed") || !strings.Contains(errs, h.ctl.Fingerprint) {
		t.Errorf("stderr %q should say the fingerprint changed and show the presented one", errs)
	}
	if _, err := os.Stat(h.cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused login wrote the config: %v", err)
	}

	// A pin saved earlier that no longer matches is refused the same way.
	h.login()
	t.Setenv("CVLAN_FINGERPRINT", wrong)
	if errs := h.fail(1, "tenant", "list"); !strings.Contains(errs, "fingerprint changed") {
		t.Errorf("stale pin: %q", errs)
	}
}

func TestLoginBadTokenShowsAPIMessage(t *testing.T) {
	h := newHarness(t)
	c, _ := apiclient.New(apiclient.Config{Server: h.ctl.URL, Token: "tk_nosuch.secret", Fingerprint: h.ctl.Fingerprint})
	_, err := c.ListTenants(context.Background(), apiclient.ListOptions{})
	if !apiclient.IsStatus(err, 401) {
		t.Fatalf("bad token: %v, want 401", err)
	}
	errs := h.fail(1, "login", "--server", h.ctl.URL, "--token", "tk_nosuch.secret", "--fingerprint", h.ctl.Fingerprint)
	if want := apiMessage(t, err); errs != want {
		t.Errorf("stderr %q, want the API's message %q", errs, want)
	}
	if _, err := os.Stat(h.cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused login wrote the config: %v", err)
	}
}

func TestLoginTrustOnFirstUse(t *testing.T) {
	h := newHarness(t)
	_, errs, code := h.run("login", "--server", h.ctl.URL, "--token", h.ctl.OperatorToken, "--insecure-trust-on-first-use", "--tenant", "")
	if code != 0 || !strings.Contains(errs, h.ctl.Fingerprint) {
		t.Fatalf("exit %d, stderr %q: want the fingerprint shown", code, errs)
	}
	cfg, _ := loadConfig(h.cfg)
	if cfg.Fingerprint != h.ctl.Fingerprint {
		t.Errorf("pinned %q, want %q", cfg.Fingerprint, h.ctl.Fingerprint)
	}
}

func TestLoginUntrustedCertificateSuggestsPin(t *testing.T) {
	h := newHarness(t)
	errs := h.fail(1, "login", "--server", h.ctl.URL, "--token", h.ctl.OperatorToken)
	if !strings.Contains(errs, "--fingerprint "+h.ctl.Fingerprint) {
		t.Errorf("stderr %q should suggest --fingerprint %s", errs, h.ctl.Fingerprint)
	}
}

func TestLoginTokenFromStdinAndTenant(t *testing.T) {
	h := newHarness(t)
	h.login()
	h.ok("tenant", "create", "acme")
	h.ok("logout")

	h.stdin = h.ctl.OperatorToken + "\n"
	h.ok("login", "--server", h.ctl.URL, "--token", "-", "--fingerprint", h.ctl.Fingerprint, "--tenant", "acme")
	cfg, _ := loadConfig(h.cfg)
	if cfg.Token != h.ctl.OperatorToken || cfg.Tenant != "acme" {
		t.Errorf("saved %+v", cfg)
	}
	// The default tenant serves tenant-scoped commands.
	h.ok("network", "list")

	// An unknown default tenant is refused before anything is saved.
	h.ok("logout")
	errs := h.fail(1, "login", "--server", h.ctl.URL, "--token", h.ctl.OperatorToken, "--fingerprint", h.ctl.Fingerprint, "--tenant", "nosuch")
	if !strings.Contains(errs, "nosuch") {
		t.Errorf("unknown tenant: %q", errs)
	}
}

func TestSettingsPrecedence(t *testing.T) {
	h := newHarness(t)
	h.login("--tenant", "")
	for _, name := range []string{"file", "env", "flag"} {
		h.ok("tenant", "create", name)
	}
	h.ok("logout")
	h.login("--tenant", "file")

	a := &app{}
	s, err := a.settings()
	if err != nil || s.Tenant != "file" {
		t.Fatalf("from the file: %+v, %v", s, err)
	}
	t.Setenv("CVLAN_TENANT", "env")
	if s, _ = a.settings(); s.Tenant != "env" {
		t.Errorf("env: tenant %q", s.Tenant)
	}
	a.tenantFlag = "flag"
	if s, _ = a.settings(); s.Tenant != "flag" {
		t.Errorf("flag: tenant %q", s.Tenant)
	}

	// CVLAN_SERVER and CVLAN_TOKEN work without a config file.
	h.ok("logout")
	t.Setenv("CVLAN_SERVER", h.ctl.URL)
	t.Setenv("CVLAN_TOKEN", h.ctl.OperatorToken)
	t.Setenv("CVLAN_FINGERPRINT", h.ctl.Fingerprint)
	h.ok("network", "list")

	t.Setenv("CVLAN_FINGERPRINT", "sha256:zz")
	if errs := h.fail(1, "tenant", "list"); !strings.Contains(errs, "CVLAN_FINGERPRINT") {
		t.Errorf("bad CVLAN_FINGERPRINT: %q", errs)
	}
}
