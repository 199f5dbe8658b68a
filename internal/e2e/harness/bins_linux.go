package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BinEnv names a directory of prebuilt binaries that Binaries uses instead of building.
const BinEnv = "CVLAN_E2E_BIN"

// buildTimeout bounds `go build ./cmd/...` (a cold build takes about a minute).
const buildTimeout = 10 * time.Minute

// Bins are the paths of the repository's binaries.
type Bins struct {
	Dir        string // the directory holding them
	Controller string // cvlan-controller
	Agent      string // cvlan-agent
	Relay      string // cvlan-relay
	VRouter    string // cvlan-vrouter
	Ctl        string // cvlanctl
}

var bins struct {
	once   sync.Once
	b      Bins
	err    error
	mu     sync.Mutex
	tmpDir string // built by us, removed by Main
}

// Binaries returns the repository's binaries, built once per test process with
// `CGO_ENABLED=0 go build -o DIR ./cmd/...` at the module root into a temporary
// directory that Main removes, or taken from the directory $CVLAN_E2E_BIN names. It
// fails t if they cannot be built or found; every later call fails the same way.
func Binaries(t testing.TB) Bins {
	t.Helper()
	requireMain(t)
	bins.once.Do(func() { bins.b, bins.err = loadBins() })
	if bins.err != nil {
		t.Fatalf("harness: %v", bins.err)
	}
	return bins.b
}

func loadBins() (Bins, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		b, err := binsIn(dir)
		if err != nil {
			return Bins{}, fmt.Errorf("using the binaries of $%s: %w", BinEnv, err)
		}
		return b, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return Bins{}, fmt.Errorf("finding the module root: %w", err)
	}
	dir, err := os.MkdirTemp("", prefixFor(os.Getpid(), 0)+"-bin-")
	if err != nil {
		return Bins{}, fmt.Errorf("making the binaries directory: %w", err)
	}
	bins.mu.Lock()
	bins.tmpDir = dir
	bins.mu.Unlock()
	if err := build(root, dir); err != nil {
		return Bins{}, err
	}
	return binsIn(dir)
}

// binsIn returns the binaries in dir, checking that each is an executable file.
func binsIn(dir string) (Bins, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Bins{}, err
	}
	b := Bins{
		Dir:        abs,
		Controller: filepath.Join(abs, "cvlan-controller"),
		Agent:      filepath.Join(abs, "cvlan-agent"),
		Relay:      filepath.Join(abs, "cvlan-relay"),
		VRouter:    filepath.Join(abs, "cvlan-vrouter"),
		Ctl:        filepath.Join(abs, "cvlanctl"),
	}
	for _, path := range []string{b.Controller, b.Agent, b.Relay, b.VRouter, b.Ctl} {
		fi, err := os.Stat(path)
		if err != nil {
			return Bins{}, err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return Bins{}, fmt.Errorf("%s is not an executable file", path)
		}
	}
	return b, nil
}

// build runs `CGO_ENABLED=0 go build -o dir ./cmd/...` in the module at root.
func build(root, dir string) error {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building the binaries: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", dir+string(filepath.Separator), "./cmd/...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the binaries (go build ./cmd/... in %s): %w\n%s", root, err, out)
	}
	return nil
}

// moduleRoot returns the directory of the main module's go.mod: from `go env GOMOD`,
// or, without a go command, by walking up from the working directory.
func moduleRoot() (string, error) {
	if goCmd, err := exec.LookPath("go"); err == nil {
		out, err := exec.Command(goCmd, "env", "GOMOD").Output()
		gomod := string(bytes.TrimSpace(out))
		if err == nil && gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// removeBinDir removes the binaries that loadBins built, if any.
func removeBinDir() {
	bins.mu.Lock()
	dir := bins.tmpDir
	bins.tmpDir = ""
	bins.mu.Unlock()
	if dir != "" && strings.HasPrefix(filepath.Base(dir), prefixFor(os.Getpid(), 0)) {
		os.RemoveAll(dir)
	}
}
