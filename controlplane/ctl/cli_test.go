package ctl

import (
	"bytes"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestUsageErrorsExit2(t *testing.T) {
	h := newHarness(t)
	h.login() // so that no failure below is "not logged in"
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"tenant", "bogus"}, `unknown command "bogus" for "cvlanctl tenant"`},
		{[]string{"--bogus"}, "unknown flag: --bogus"},
		{[]string{"tenant", "list", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"tenant", "get"}, "needs NAME|ID"},
		{[]string{"tenant", "get", "a", "b"}, "takes one NAME|ID"},
		{[]string{"tenant", "list", "extra"}, "takes no arguments"},
		{[]string{"-o", "xml", "tenant", "list"}, "--output"},
		{[]string{"--output=csv", "version"}, "--output"},
		{[]string{"network", "list"}, "--tenant"},
		{[]string{"-t", "acme", "network", "create", "x"}, `"ipv4" not set`},
		{[]string{"-t", "acme", "network", "create", "x", "--ipv4", "10.0.0.0/24", "--mtu", "big"}, "--mtu"},
		{[]string{"-t", "acme", "network", "update", "x"}, "nothing to change"},
		{[]string{"token", "create"}, `"role" not set`},
		{[]string{"login", "--server", "http://insecure", "--token", "t"}, "https://"},
		{[]string{"login", "--server", "https://x", "--token", "t", "--fingerprint", "sha256:00", "--insecure-trust-on-first-use"}, "fingerprint"},
		{[]string{"audit", "--limit", "-1"}, "--limit"},
	} {
		errs := h.fail(exitUsage, tc.args...)
		if !strings.Contains(errs, tc.want) {
			t.Errorf("cvlanctl %s: stderr %q lacks %q", strings.Join(tc.args, " "), errs, tc.want)
		}
	}
}

func TestHelpAndVersionExit0(t *testing.T) {
	h := newHarness(t)
	for _, args := range [][]string{{}, {"--help"}, {"tenant"}, {"network", "create", "--help"}, {"version"}} {
		if out := h.ok(args...); out == "" {
			t.Errorf("cvlanctl %s printed nothing", strings.Join(args, " "))
		}
	}
	if out := h.ok("version"); !strings.HasPrefix(out, "cvlanctl ") {
		t.Errorf("version printed %q", out)
	}
}

func TestCompletion(t *testing.T) {
	h := newHarness(t)
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		if out := h.ok("completion", shell); !strings.Contains(out, "cvlanctl") {
			t.Errorf("completion %s printed %d bytes without the command's name", shell, len(out))
		}
	}

	h.login()
	h.ok("tenant", "create", "acme")
	h.ok("tenant", "create", "beta")
	h.ok("-t", "acme", "network", "create", "office", "--ipv4", "100.64.0.0/24")
	h.ok("-t", "acme", "network", "create", "lab", "--ipv4", "100.64.1.0/24")

	// Names complete from the list endpoint, filtered by what was typed.
	out := h.ok("__complete", "-t", "acme", "network", "get", "o")
	if !strings.Contains(out, "office") || strings.Contains(out, "lab") {
		t.Errorf("network get o<TAB>:\n%s", out)
	}
	out = h.ok("__complete", "--tenant", "")
	if !strings.Contains(out, "acme") || !strings.Contains(out, "beta") {
		t.Errorf("--tenant <TAB>:\n%s", out)
	}
	out = h.ok("__complete", "-t", "acme", "node", "create", "n1", "--network", "")
	if !strings.Contains(out, "office") || !strings.Contains(out, "lab") {
		t.Errorf("--network <TAB>:\n%s", out)
	}
	// Without a tenant, or logged out: nothing, and no error output.
	for _, args := range [][]string{{"__complete", "network", "get", ""}, {"__complete", "--config", "/nonexistent/x.yaml", "tenant", "get", ""}} {
		out, errs, code := h.run(args...)
		if code != 0 || strings.Contains(out, "office") || strings.Contains(errs, "cvlanctl:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

func TestYAMLKeepsTypes(t *testing.T) {
	// Strings that read as other YAML types stay strings; keys keep JSON's order.
	v := struct {
		A string `json:"zeta"`
		B string `json:"alpha"`
		C string `json:"on"`
		N int    `json:"n"`
	}{"123", "true", "null", 7}
	data, err := toYAML(v)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := yaml.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if back["zeta"] != "123" || back["alpha"] != "true" || back["on"] != "null" || back["n"] != 7 {
		t.Errorf("round trip through YAML: %v\n%s", back, data)
	}
	if !strings.HasPrefix(string(data), "zeta:") {
		t.Errorf("field order lost:\n%s", data)
	}
}

func TestMainWritesErrorsToStderr(t *testing.T) {
	var out, errb bytes.Buffer
	t.Setenv("CVLAN_CONFIG", t.TempDir()+"/none.yaml")
	if code := Main([]string{"bogus"}, &out, &errb); code != exitUsage || out.Len() != 0 {
		t.Errorf("exit %d, stdout %q", code, out.String())
	}
	if got := errb.String(); !strings.HasPrefix(got, "cvlanctl: unknown command") {
		t.Errorf("stderr %q", got)
	}
}
