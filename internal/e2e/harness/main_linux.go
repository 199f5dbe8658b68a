package harness

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Main is the TestMain of a package that uses the harness:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// Before the tests it removes what earlier test processes that died without cleaning
// up left behind (namespaces, with the processes still in them, UAPI sockets, BPF pin
// directories and temporary directories whose names encode the pid of a process that
// no longer exists). While they run, a watchdog cleans up every live harness, prints
// its logs and exits with status 2 shortly before -test.timeout would panic (a panic
// that runs no t.Cleanup), and likewise on SIGINT or SIGTERM. After them it removes
// the binaries that Binaries built.
func Main(m *testing.M) {
	if !flag.Parsed() {
		flag.Parse()
	}
	mainActive.Store(true)
	if os.Geteuid() == 0 {
		removed, err := sweepStale(defaultSweepDirs())
		if len(removed) > 0 {
			fmt.Fprintf(os.Stderr, "harness: removed leftovers of dead test processes: %s\n", strings.Join(removed, ", "))
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "harness: sweeping leftovers of dead test processes: %v\n", err)
		}
	}
	stop := startWatchdog(testTimeout())
	code := m.Run()
	stop()
	removeBinDir()
	os.Exit(code)
}

// testTimeout returns the value of -test.timeout, 0 if there is none.
func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if d, ok := g.Get().(time.Duration); ok {
			return d
		}
	}
	return 0
}

// watchdogMargin is how long before the test timeout the watchdog acts: a tenth of the
// timeout, at least a second and at most 30 s, and never more than half of it.
func watchdogMargin(timeout time.Duration) time.Duration {
	return min(max(timeout/10, time.Second), 30*time.Second, timeout/2)
}

// startWatchdog arms the timeout and signal handling of Main; stop disarms them.
func startWatchdog(timeout time.Duration) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var fire <-chan time.Time // nil, never ready, without a timeout
	var timer *time.Timer
	if timeout > 0 {
		timer = time.NewTimer(timeout - watchdogMargin(timeout))
		fire = timer.C
	}
	quit := make(chan struct{})
	go func() {
		select {
		case <-fire:
			emergency(fmt.Sprintf("the tests are about to reach -test.timeout=%v", timeout), 2, true)
		case sig := <-sigs:
			emergency("received "+sig.String(), 1, false)
		case <-quit:
		}
	}()
	return func() {
		if timer != nil {
			timer.Stop()
		}
		signal.Stop(sigs)
		close(quit)
	}
}

// emergency cleans up every live harness, printing their logs to stderr, and exits.
// The cleanup gets a few seconds: the test binary must exit before -test.timeout.
func emergency(why string, code int, stacks bool) {
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	logf("harness: %s: killing processes and deleting namespaces", why)
	live.Lock()
	hs := make([]*H, 0, len(liveHs))
	for h := range liveHs {
		hs = append(hs, h)
	}
	live.Unlock()
	slices.SortFunc(hs, func(a, b *H) int { return strings.Compare(a.prefix, b.prefix) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, h := range hs {
			logf("harness: test %s (prefix %s) was still running", h.t.Name(), h.prefix)
			for _, err := range h.cleanup(logf, func() bool { return true }, true) {
				logf("harness: cleanup of %s: %v", h.t.Name(), err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		logf("harness: the cleanup did not finish in 5s; leaving the rest to the next run's sweep")
	}
	if stacks {
		buf := make([]byte, 1<<20)
		logf("harness: goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}
	removeBinDir()
	os.Exit(code)
}

// sweepDirs are the host-wide places the sweep looks in.
type sweepDirs struct {
	wg, bpf, temp string
}

func defaultSweepDirs() sweepDirs {
	return sweepDirs{wg: WireGuardSockDir, bpf: BPFPinDir, temp: os.TempDir()}
}

// sweepStale removes namespaces (killing the processes in them), UAPI sockets, BPF pin
// directories and temporary directories whose names this package made for a process
// that is no longer alive. Names of any other shape, and names of live processes, are
// left alone. It returns what it removed.
func sweepStale(dirs sweepDirs) (removed []string, err error) {
	var errs []error
	dead := func(name string, sep byte) bool {
		pid, ok := ownerPID(name, sep)
		return ok && pid != os.Getpid() && !pidAlive(pid)
	}

	nss, err := listNetns()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing namespaces: %w", err))
	}
	for _, name := range nss {
		if dead(name, '-') {
			if err := deleteNetns(name); err != nil {
				errs = append(errs, err)
			} else {
				removed = append(removed, "namespace "+name)
			}
		}
	}

	entries := func(dir string) []fs.DirEntry {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("reading %s: %w", dir, err))
		}
		return ents
	}
	for _, e := range entries(dirs.wg) {
		name, ok := strings.CutSuffix(e.Name(), ".sock")
		if ok && dead(name, 0) {
			path := filepath.Join(dirs.wg, e.Name())
			if err := os.Remove(path); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", path, err))
			} else {
				removed = append(removed, path)
			}
		}
	}
	for _, e := range entries(dirs.bpf) {
		if e.IsDir() && dead(e.Name(), 0) {
			path := filepath.Join(dirs.bpf, e.Name())
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", path, err))
			} else {
				removed = append(removed, path)
			}
		}
	}
	for _, e := range entries(dirs.temp) {
		if e.IsDir() && dead(e.Name(), '-') {
			path := filepath.Join(dirs.temp, e.Name())
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", path, err))
			} else {
				removed = append(removed, path)
			}
		}
	}
	return removed, errors.Join(errs...)
}
