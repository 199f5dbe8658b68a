package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cvlan/cvlan/internal/privileged"
)

// Host-wide directories shared by all namespaces, where daemons leave files named after
// their interface.
const (
	// WireGuardSockDir holds wireguard-go's UAPI sockets, <interface>.sock.
	WireGuardSockDir = "/var/run/wireguard"
	// BPFPinDir holds the agent's pinned BPF objects, one directory per interface.
	BPFPinDir = "/sys/fs/bpf/cvlan"
	// netnsDir is where `ip netns add` binds named namespaces.
	netnsDir = "/run/netns"
)

// Timeouts of the harness's own operations.
const (
	// StopTimeout is how long Stop waits after SIGTERM before it sends SIGKILL.
	StopTimeout = 10 * time.Second
	// RunTimeout bounds a command run by H.Run.
	RunTimeout = 30 * time.Second
	// logTail is how many lines of each process's log a failed test prints.
	logTail = 60
)

// H is the harness of one test: the namespaces, processes, interface names and
// directories it made, all removed by the cleanup that New registers. Its methods
// that can fail call t.Fatalf, so they must be called from the test's goroutine;
// Proc and NS methods may be called from any goroutine.
type H struct {
	t      testing.TB
	prefix string
	root   string // temporary directory for logs and TempDir

	// Host-wide directories, fields so that the harness's own tests can use
	// temporary ones.
	wgDir, bpfDir string

	mu      sync.Mutex
	closed  bool
	names   map[string]bool // namespace names in use
	nss     []*NS           // in creation order, LAN hubs included
	lans    int
	procs   []*Proc
	logs    map[string]int // log file names in use
	ifaces  []string       // from OwnInterface
	ntemp   int
	cleanMu sync.Mutex // held for the whole cleanup
	cleaned bool
}

var (
	mainActive atomic.Bool // set by Main
	seq        atomic.Int64

	live   sync.Mutex
	liveHs = map[*H]bool{} // harnesses not yet cleaned up, for the watchdog
)

func requireMain(t testing.TB) {
	t.Helper()
	if !mainActive.Load() {
		t.Fatalf("harness: the test package must call harness.Main from TestMain " +
			"(func TestMain(m *testing.M) { harness.Main(m) }), which cleans up on -test.timeout")
	}
}

// New returns the harness of test t. It skips (or fails, see package privileged) when
// the process is not root, and registers the cleanup that stops every process started
// through the harness, deletes its namespaces, removes what OwnInterface registered and
// its temporary directories, and, if the test failed, logs the tail of every process's
// log.
func New(t testing.TB) *H {
	t.Helper()
	privileged.Require(t)
	requireMain(t)
	n := int(seq.Add(1)-1)%maxSeq + 1
	prefix := prefixFor(os.Getpid(), n)
	root, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		t.Fatalf("harness: making the test directory: %v", err)
	}
	h := &H{
		t:      t,
		prefix: prefix,
		root:   root,
		wgDir:  WireGuardSockDir,
		bpfDir: BPFPinDir,
		names:  map[string]bool{},
		logs:   map[string]int{},
	}
	for _, dir := range []string{h.logDir(), h.tempBase()} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			os.RemoveAll(root)
			t.Fatalf("harness: making %s: %v", dir, err)
		}
	}
	live.Lock()
	liveHs[h] = true
	live.Unlock()
	t.Cleanup(func() {
		for _, err := range h.cleanup(t.Logf, t.Failed, false) {
			t.Errorf("harness cleanup: %v", err)
		}
	})
	return h
}

// Prefix returns the prefix of every name this harness makes.
func (h *H) Prefix() string { return h.prefix }

// Name returns suffix behind the harness's prefix: a name unique on this host, for
// things whose namespace is the whole host (interface names that wireguard-go uses for
// its UAPI socket). It fails the test if the result would not fit an interface name.
func (h *H) Name(suffix string) string {
	h.t.Helper()
	name := h.prefix + suffix
	if !validName(suffix, false) || len(name) > maxIfName {
		h.t.Fatalf("harness: name suffix %q must be lowercase letters and digits, at most %d of them",
			suffix, maxIfName-len(h.prefix))
	}
	return name
}

// Interface returns Name(suffix) after registering it with OwnInterface.
func (h *H) Interface(suffix string) string {
	h.t.Helper()
	name := h.Name(suffix)
	h.OwnInterface(name)
	return name
}

// OwnInterface registers an interface name that a daemon of this test uses, so that
// the cleanup removes what such a daemon leaves on the host outside its namespace: the
// UAPI socket WireGuardSockDir/<name>.sock and the pin directory BPFPinDir/<name>. The
// name must carry the harness's prefix (see Name), so that no other test's or the
// host's files can be removed.
func (h *H) OwnInterface(name string) {
	h.t.Helper()
	if !strings.HasPrefix(name, h.prefix) || len(name) == len(h.prefix) || len(name) > maxIfName ||
		strings.ContainsAny(name, "/ ") {
		h.t.Fatalf("harness: OwnInterface(%q): the name must be made by H.Name", name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Contains(h.ifaces, name) {
		h.ifaces = append(h.ifaces, name)
	}
}

// TempDir returns a new empty directory (for a daemon's state), removed by the
// cleanup. Its path is short, so that unix sockets inside it stay under 108 bytes.
func (h *H) TempDir() string {
	h.t.Helper()
	h.mu.Lock()
	h.ntemp++
	dir := filepath.Join(h.tempBase(), fmt.Sprint(h.ntemp))
	h.mu.Unlock()
	if err := os.Mkdir(dir, 0o755); err != nil {
		h.t.Fatalf("harness: making a temporary directory: %v", err)
	}
	return dir
}

func (h *H) logDir() string   { return filepath.Join(h.root, "log") }
func (h *H) tempBase() string { return filepath.Join(h.root, "tmp") }

// errClosed is returned by operations on a harness whose cleanup has started.
var errClosed = errors.New("the harness has been cleaned up")

// cleanup undoes everything the harness made; it runs once, from t.Cleanup or from the
// watchdog (emergency: SIGKILL at once, always print logs), whichever comes first,
// and later calls wait for it and return nil.
func (h *H) cleanup(logf func(string, ...any), failed func() bool, emergency bool) []error {
	h.mu.Lock()
	h.closed = true
	procs := slices.Clone(h.procs)
	h.mu.Unlock()
	if emergency {
		for _, p := range procs {
			p.signal(syscall.SIGKILL) // at once, even if a cleanup is already waiting on Stop
		}
	}

	h.cleanMu.Lock()
	defer h.cleanMu.Unlock()
	if h.cleaned {
		return nil
	}
	h.cleaned = true
	defer func() {
		live.Lock()
		delete(liveHs, h)
		live.Unlock()
	}()

	var errs []error
	slices.Reverse(procs)
	if emergency {
		for _, p := range procs {
			p.Kill()
		}
	} else {
		stopAll(procs)
	}

	h.mu.Lock()
	nss := slices.Clone(h.nss)
	ifaces := slices.Clone(h.ifaces)
	h.mu.Unlock()
	slices.Reverse(nss)

	if emergency || failed() {
		h.report(logf, procs, nss)
	}
	for _, ns := range nss {
		if err := deleteNetns(ns.Name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range ifaces {
		errs = append(errs, removeHostLeftovers(h.wgDir, h.bpfDir, name)...)
	}
	if err := os.RemoveAll(h.root); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", h.root, err))
	}
	return errs
}

// stopAll stops processes in parallel, so that one that ignores SIGTERM does not hold
// up the others.
func stopAll(procs []*Proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.Stop() })
	}
	wg.Wait()
}

// report logs the tail of every process's log and the addresses and routes of every
// node namespace, for a failed test.
func (h *H) report(logf func(string, ...any), procs []*Proc, nss []*NS) {
	for _, p := range slices.Backward(procs) {
		logf("--- %s (%s in %s), last %d lines of its log:\n%s", p.name, strings.Join(p.argv, " "),
			p.ns.Name, logTail, tail(p.Log(), logTail))
	}
	for _, ns := range slices.Backward(nss) {
		if ns.hub {
			continue
		}
		var state []string
		for _, args := range [][]string{{"-br", "addr"}, {"route"}, {"-6", "route"}} {
			out, err := ipOutput(append([]string{"-n", ns.Name}, args...)...)
			if err != nil {
				out = err.Error()
			}
			if out = strings.TrimSpace(out); out != "" {
				state = append(state, out)
			}
		}
		logf("--- namespace %s:\n%s", ns.Name, strings.Join(state, "\n"))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// removeHostLeftovers removes the UAPI socket and BPF pin directory of an interface.
func removeHostLeftovers(wgDir, bpfDir, name string) []error {
	var errs []error
	sock := filepath.Join(wgDir, name+".sock")
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing UAPI socket: %w", err))
	}
	if err := os.RemoveAll(filepath.Join(bpfDir, name)); err != nil {
		errs = append(errs, fmt.Errorf("removing BPF pins: %w", err))
	}
	return errs
}

// Eventually calls f until it returns nil, every interval, and fails t with f's last
// error if that has not happened within timeout. It is the way to wait for a state.
func Eventually(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("still failing after %v: %v", timeout, err)
		}
		time.Sleep(min(interval, left))
	}
}
