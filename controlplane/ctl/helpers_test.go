package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/controltest"
)

// harness runs cvlanctl in-process against a real in-process controller, with its
// own config file and no CVLAN_* variables from the outside.
type harness struct {
	t     *testing.T
	ctl   *controltest.Controller
	cfg   string // config file path
	stdin string // fed to the next run, then cleared
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, ctl: controltest.Start(t), cfg: filepath.Join(t.TempDir(), "cvlan", "cvlanctl.yaml")}
	for _, e := range envOverrides {
		t.Setenv(e.name, "")
	}
	t.Setenv("CVLAN_CONFIG", h.cfg)
	return h
}

// run runs cvlanctl with args and returns what it printed and its exit code.
func (h *harness) run(args ...string) (stdout, stderr string, code int) {
	h.t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(h.stdin), &out, &errb)
	h.stdin = ""
	return out.String(), errb.String(), code
}

// ok runs cvlanctl and fails the test unless it exits 0; it returns stdout.
func (h *harness) ok(args ...string) string {
	h.t.Helper()
	out, errs, code := h.run(args...)
	if code != 0 {
		h.t.Fatalf("cvlanctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// fail runs cvlanctl, wants exit code want, and returns stderr.
func (h *harness) fail(want int, args ...string) string {
	h.t.Helper()
	out, errs, code := h.run(args...)
	if code != want {
		h.t.Fatalf("cvlanctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errs)
	}
	if !strings.HasPrefix(errs, "cvlanctl: ") {
		h.t.Errorf("cvlanctl %s: stderr %q does not start with \"cvlanctl: \"", strings.Join(args, " "), errs)
	}
	return errs
}

// login logs in as the controller's operator with the pinned fingerprint.
func (h *harness) login(extra ...string) {
	h.t.Helper()
	h.ok(append([]string{"login", "--server", h.ctl.URL, "--token", h.ctl.OperatorToken, "--fingerprint", h.ctl.Fingerprint}, extra...)...)
}

// api is a client with the operator token, to set up and check what the CLI did.
func (h *harness) api() *apiclient.Client {
	h.t.Helper()
	c, err := apiclient.New(apiclient.Config{Server: h.ctl.URL, Token: h.ctl.OperatorToken, Fingerprint: h.ctl.Fingerprint})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// jsonOf runs cvlanctl -o json args and decodes stdout into v, a pointer, which it
// zeroes first: fields the output omits must not keep old values.
func (h *harness) jsonOf(v any, args ...string) {
	h.t.Helper()
	reflect.ValueOf(v).Elem().SetZero()
	out := h.ok(append([]string{"-o", "json"}, args...)...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		h.t.Fatalf("cvlanctl -o json %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if _, err := dec.Token(); err != io.EOF {
		h.t.Fatalf("cvlanctl -o json %s: more than one JSON value\n%s", strings.Join(args, " "), out)
	}
}

// apiMessage is what cvlanctl must print for an API error: the server's text.
func apiMessage(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		t.Fatal("the API accepted what should fail")
	}
	return "cvlanctl: " + err.Error() + "\n"
}
