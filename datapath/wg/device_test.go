package wg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string // "" for valid
	}{
		{Options{Name: "cvlan0"}, ""},
		{Options{Name: "cvlan0", Mode: ModeUserspace, MTU: 1380}, ""},
		{Options{}, `interface name ""`},
		{Options{Name: "much-too-long-name"}, "want 1 to 15 characters"},
		{Options{Name: "a/b"}, "no '/'"},
		{Options{Name: ".."}, "want 1 to 15"},
		{Options{Name: "cvlan0", MTU: 100}, "MTU 100 out of range"},
		{Options{Name: "cvlan0", Mode: "fast"}, `WireGuard mode "fast"`},
	} {
		err := tc.opts.validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("validate(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
}

func TestNotSupported(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.EOPNOTSUPP, true},
		{fmt.Errorf("adding wireguard link wg0: %w", syscall.EOPNOTSUPP), true},
		{fmt.Errorf("adding wireguard link wg0: %w: Unknown device type", syscall.EOPNOTSUPP), true},
		{errors.New("Error: Unknown device type."), true},
		{errors.New("operation not supported"), true},
		{syscall.EEXIST, false},
		{fmt.Errorf("adding wireguard link wg0: %w", syscall.EPERM), false},
	} {
		if got := notSupported(tc.err); got != tc.want {
			t.Errorf("notSupported(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestClaimSocket checks the UAPI socket rules in a directory of its own: no socket
// is fine, a stale one is removed, a live one is refused.
func TestClaimSocket(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	if err := claimSocket(dir, "wg0", log); err != nil {
		t.Fatalf("no socket: %v", err)
	}

	// A live device: something listens on the socket.
	l, err := net.Listen("unix", socketPath(dir, "wg0"))
	if err != nil {
		t.Fatal(err)
	}
	err = claimSocket(dir, "wg0", log)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("live socket: %v, want ErrInUse", err)
	}
	if _, err := os.Stat(socketPath(dir, "wg0")); err != nil {
		t.Fatalf("the live socket was removed: %v", err)
	}

	// A stale one: the listener is gone and left its file behind, as after a crash.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if err := claimSocket(dir, "wg0", log); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := os.Stat(socketPath(dir, "wg0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the stale socket is still there: %v", err)
	}

	// Not a socket at all: leave it to a human.
	if err := os.WriteFile(filepath.Join(dir, "wg1.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := claimSocket(dir, "wg1", log); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v, want an error", err)
	}
}
