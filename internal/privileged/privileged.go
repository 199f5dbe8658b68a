// Package privileged decides whether a test that needs root (network namespaces,
// TUN devices, netlink changes, BPF) runs. Such a test skips only when the process is
// not root and CVLAN_REQUIRE_PRIVILEGED is unset; with the variable set (as CI sets
// it) a test that cannot run fails instead, so a skip can never hide a regression.
// It must never be imported by non-test code.
package privileged

import (
	"os"
	"testing"
)

// Env is the variable that makes privileged tests mandatory.
const Env = "CVLAN_REQUIRE_PRIVILEGED"

// Required reports whether privileged tests must run (Env is set).
func Required() bool { return os.Getenv(Env) != "" }

// Require skips t unless the process is root; with Env set it fails t instead.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if Required() {
		t.Fatalf("test needs root, and %s is set", Env)
	}
	t.Skipf("test needs root (set %s to make this a failure)", Env)
}
