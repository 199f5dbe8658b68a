package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseConfig(t *testing.T) {
	fp := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in      string
		want    fileConfig
		wantErr string
	}{
		{in: "", want: fileConfig{}},
		{in: "server: https://c.example:8443/\ntoken: tk_a.b\nfingerprint: " + strings.ToUpper(fp) + "\ntenant: acme\n",
			want: fileConfig{Server: "https://c.example:8443", Token: "tk_a.b", Fingerprint: fp, Tenant: "acme"}},
		{in: "server: https://c\nca_file: /etc/ca.pem\n", want: fileConfig{Server: "https://c", CAFile: "/etc/ca.pem"}},
		{in: "server: http://c\n", wantErr: "https://"},
		{in: "fingerprint: md5:00\n", wantErr: "fingerprint"},
		{in: "fingerprint: " + fp + "\nca_file: x\n", wantErr: "only one"},
		{in: "sever: https://c\n", wantErr: "sever"},
		{in: "server: [1, 2]\n", wantErr: "cannot unmarshal"},
		{in: "server: https://a\n---\nserver: https://b\n", wantErr: "more than one"},
	} {
		got, err := parseConfig([]byte(tc.in))
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("parseConfig(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("parseConfig(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestLoadConfigNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("token: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("loadConfig of a broken file: %v", err)
	}
	if c, err := loadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err != nil || c != (fileConfig{}) {
		t.Errorf("loadConfig of a missing file = %+v, %v", c, err)
	}
}

// FuzzLoadConfig feeds the config parser arbitrary bytes: it must never panic, and
// whatever it accepts must save and load back unchanged.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("server: https://ctl.example:8443\ntoken: tk_abc.def\nfingerprint: sha256:" + strings.Repeat("0f", 32) + "\ntenant: acme\n"))
	f.Add([]byte("server: https://[::1]:8443\nca_file: /etc/cvlan/ca.pem\n"))
	f.Add([]byte("{server: 'https://x', token: \"t\"}"))
	f.Add([]byte("server: https://a\n---\n"))
	f.Add([]byte("server: !!binary aGVsbG8=\n"))
	f.Add([]byte("token: &a x\ntenant: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(data)
		if err != nil {
			return
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("marshal %+v: %v", c, err)
		}
		back, err := parseConfig(out)
		if err != nil {
			t.Fatalf("reloading what was accepted: %v\n%s", err, out)
		}
		if back != c {
			t.Fatalf("round trip changed the config: %+v -> %+v", c, back)
		}
	})
}
