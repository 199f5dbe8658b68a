package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/internal/privileged"
)

func TestMain(m *testing.M) { Main(m) }

func TestOwnerPID(t *testing.T) {
	mine := prefixFor(os.Getpid(), 3)
	for _, tc := range []struct {
		name string
		sep  byte
		pid  int
		ok   bool
	}{
		{prefixFor(12345, 1) + "-a", '-', 12345, true},
		{prefixFor(12345, 1) + "wg0", 0, 12345, true},
		{prefixFor(1, 0) + "-bin-77", '-', 1, true},
		{mine + "-x", '-', os.Getpid(), true},
		{prefixFor(12345, 1) + "wg0", '-', 0, false}, // no separator
		{prefixFor(12345, 1), 0, 0, false},           // nothing after the prefix
		{"cvlan0wg1", 0, 0, false},                   // pid "lan0w" is over pid_max
		{"cvlan-agent", '-', 0, false},
		{"wg0", 0, 0, false},
		{"cv00000a1-x", '-', 0, false}, // pid 0
		{"cv0A0000a-x", '-', 0, false}, // upper case
		{"xv009ix01-x", '-', 0, false},
	} {
		pid, ok := ownerPID(tc.name, tc.sep)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPID(%q, %q) = %d, %v; want %d, %v", tc.name, tc.sep, pid, ok, tc.pid, tc.ok)
		}
	}
	if got := prefixFor(pidMaxLimit, maxSeq); len(got) != prefixLen {
		t.Errorf("prefixFor(pidMaxLimit, maxSeq) = %q, want %d characters", got, prefixLen)
	}
}

func TestWatchdogMargin(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		10 * time.Minute: 30 * time.Second,
		time.Minute:      6 * time.Second,
		3 * time.Second:  time.Second,
		time.Second:      500 * time.Millisecond,
	} {
		if got := watchdogMargin(timeout); got != want {
			t.Errorf("watchdogMargin(%v) = %v, want %v", timeout, got, want)
		}
	}
}

func TestPingOverLAN(t *testing.T) {
	h := New(t)
	lan := h.LAN("10.99.0.0/24")
	lan6 := h.LAN("fd00:99::/64")
	a, b := h.Netns("a"), h.Netns("b")
	if got := h.Attach(a, lan, "10.99.0.2/24"); got != "eth0" {
		t.Errorf("first Attach made %q, want eth0", got)
	}
	h.Attach(b, lan, "10.99.0.3") // the LAN's prefix length
	if got := h.Attach(a, lan6, "fd00:99::2/64"); got != "eth1" {
		t.Errorf("second Attach made %q, want eth1", got)
	}
	h.Attach(b, lan6, "fd00:99::3/64")
	if a.Addr() != "10.99.0.2" || b.Addr() != "10.99.0.3" {
		t.Fatalf("Addr() = %q, %q", a.Addr(), b.Addr())
	}
	if got := b.Addrs(); len(got) != 2 || got[1].String() != "fd00:99::3/64" {
		t.Errorf("b.Addrs() = %v", got)
	}
	for _, pair := range [][2]*NS{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		for _, addr := range to.Addrs() {
			Eventually(t, 5*time.Second, 50*time.Millisecond, func() error {
				return h.Ping(from, addr.Addr().String())
			})
		}
	}
	if err := h.Ping(a, "10.99.0.99"); err == nil {
		t.Error("ping to an address nobody has succeeded")
	}

	// Commands run in the namespace, not in ours.
	out, err := h.Run(a, "readlink", "/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) == host {
		t.Errorf("Run ran in the test's own namespace %s", host)
	}
	if out, err := h.Run(a, "sh", "-c", "echo oops; exit 3"); err == nil || out != "oops\n" {
		t.Errorf("failing Run = %q, %v; want its output and an error", out, err)
	}
	if _, err := h.RunTimeout(a, 100*time.Millisecond, "sleep", "10"); err == nil ||
		!strings.Contains(err.Error(), "timed out") {
		t.Errorf("Run past its timeout: err = %v", err)
	}
	if _, err := h.attach(a, lan, "10.98.0.2/24"); err == nil {
		t.Error("Attach accepted an address outside the LAN")
	}
}

func TestProcess(t *testing.T) {
	h := New(t)
	ns := h.Netns("a")
	p := h.Start(ns, "looper", "sh", "-c",
		`trap 'echo bye; exit 0' TERM; echo ready; readlink /proc/self/ns/net; while :; do sleep 0.05; done`)
	waitLog(t, p, "ready", 1)
	host, _ := os.Readlink("/proc/self/ns/net")
	if strings.Contains(p.Log(), host) {
		t.Errorf("the process runs in the test's own namespace:\n%s", p.Log())
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(time.Second); code != 0 || err != nil {
		t.Errorf("Wait after Stop = %d, %v; want 0, nil", code, err)
	}
	if !strings.Contains(p.Log(), "bye") || !p.Exited() {
		t.Errorf("the process did not handle SIGTERM; log:\n%s", p.Log())
	}

	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, p, "ready", 2)
	if _, err := p.Wait(50 * time.Millisecond); err == nil {
		t.Error("Wait returned while the process runs")
	}
	p.Kill()
	if code, err := p.Wait(time.Second); code != -1 || err != nil {
		t.Errorf("Wait after Kill = %d, %v; want -1, nil", code, err)
	}
	if n := strings.Count(p.Log(), "=== harness: start"); n != 2 {
		t.Errorf("log has %d start lines, want 2:\n%s", n, p.Log())
	}

	// A process that ignores SIGTERM is killed.
	stubborn := h.Start(ns, "stubborn", "sh", "-c", `trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	waitLog(t, stubborn, "ready", 1)
	done := make(chan error)
	go func() { done <- stubborn.Stop() }()
	select {
	case err := <-done:
		t.Fatalf("Stop returned before StopTimeout: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	stubborn.Kill() // what Stop would do after StopTimeout; Stop then returns
	if err := <-done; err != nil {
		t.Errorf("Stop of a process killed meanwhile: %v", err)
	}

	// Two processes of one name get two logs.
	again := h.Start(ns, "looper", "true")
	if again.LogPath() == p.LogPath() {
		t.Errorf("two processes share the log %s", p.LogPath())
	}
}

func TestReportOnFailure(t *testing.T) {
	h := New(t)
	ns := h.Netns("a")
	p := h.Start(ns, "counter", "sh", "-c", "i=1; while [ $i -le 100 ]; do echo line$i; i=$((i+1)); done")
	if code, err := p.Wait(5 * time.Second); code != 0 || err != nil {
		t.Fatalf("Wait = %d, %v", code, err)
	}
	var report strings.Builder
	h.report(func(format string, args ...any) { fmt.Fprintf(&report, format+"\n", args...) },
		[]*Proc{p}, h.nss)
	got := report.String()
	for _, want := range []string{"--- counter (sh -c", "line41\n", "line100", "--- namespace " + ns.Name} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "line40\n") {
		t.Errorf("report has more than %d lines of the log:\n%s", logTail, got)
	}
}

// TestCleanup checks that a harness leaves nothing behind: processes (also those that
// left the process group), namespaces, host-wide files of its interfaces, directories.
func TestCleanup(t *testing.T) {
	privileged.Require(t)
	wgDir, bpfDir := t.TempDir(), t.TempDir()
	var (
		prefix, root, ifname string
		pids                 []int
	)
	t.Run("harness", func(t *testing.T) {
		h := New(t)
		h.wgDir, h.bpfDir = wgDir, bpfDir
		prefix, root = h.Prefix(), h.root
		lan := h.LAN("10.99.0.0/24")
		a := h.Netns("a")
		h.Attach(a, lan, "10.99.0.2/24")
		p := h.Start(a, "forker", "sh", "-c", "setsid sleep 1000 & echo child=$!; exec sleep 1000")
		waitLog(t, p, "child=", 1)
		m := regexp.MustCompile(`child=(\d+)`).FindStringSubmatch(p.Log())
		child, _ := strconv.Atoi(m[1])
		pids = []int{p.Pid(), child}
		ifname = h.Interface("wg")
		mustWrite(t, filepath.Join(wgDir, ifname+".sock"))
		mustWrite(t, filepath.Join(bpfDir, ifname, "policy"))
		mustWrite(t, filepath.Join(h.TempDir(), "state"))
	})

	names, err := listNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, prefix) {
			t.Errorf("namespace %s is still there", name)
		}
	}
	for _, pid := range pids {
		Eventually(t, 2*time.Second, 10*time.Millisecond, func() error {
			if !gone(pid) {
				return fmt.Errorf("process %d is still alive", pid)
			}
			return nil
		})
	}
	for _, path := range []string{filepath.Join(wgDir, ifname+".sock"), filepath.Join(bpfDir, ifname), root} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", path, err)
		}
	}
}

func TestSweepStale(t *testing.T) {
	privileged.Require(t)
	dead := deadPID(t)
	liveCmd := exec.Command("sleep", "60")
	if err := liveCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { liveCmd.Process.Kill(); liveCmd.Wait() })
	deadPrefix, livePrefix := prefixFor(dead, 7), prefixFor(liveCmd.Process.Pid, 7)

	deadNS, liveNS := deadPrefix+"-sweep", livePrefix+"-sweep"
	otherNS := fmt.Sprintf("cvlan-sweep-test-%d", os.Getpid()) // not a name of ours
	for _, name := range []string{deadNS, liveNS, otherNS} {
		if err := ipRun("netns", "add", name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { deleteNetns(name) })
	}
	orphan := exec.Command("sleep", "1000") // a daemon left in the dead process's namespace
	if err := inNetns(filepath.Join(netnsDir, deadNS), orphan.Start); err != nil {
		t.Fatal(err)
	}
	orphanDone := make(chan struct{})
	go func() { orphan.Wait(); close(orphanDone) }()
	t.Cleanup(func() { orphan.Process.Kill(); <-orphanDone })

	dirs := sweepDirs{wg: t.TempDir(), bpf: t.TempDir(), temp: t.TempDir()}
	wantGone := []string{
		filepath.Join(dirs.wg, deadPrefix+"wg.sock"),
		filepath.Join(dirs.bpf, deadPrefix+"wg"),
		filepath.Join(dirs.temp, deadPrefix+"-123"),
	}
	kept := []string{
		filepath.Join(dirs.wg, livePrefix+"wg.sock"),
		filepath.Join(dirs.wg, "wg0.sock"),
		filepath.Join(dirs.wg, "cvlan0wg1.sock"),
		filepath.Join(dirs.bpf, livePrefix+"wg"),
		filepath.Join(dirs.temp, livePrefix+"-123"),
		filepath.Join(dirs.temp, deadPrefix+"x"), // not a directory name of ours
	}
	for _, path := range append(wantGone[:1:1], kept[:3]...) {
		mustWrite(t, path)
	}
	for _, path := range append(wantGone[1:], kept[3:]...) {
		mustWrite(t, filepath.Join(path, "file"))
	}

	removed, err := sweepStale(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 4 {
		t.Errorf("removed %q, want the dead process's namespace and three paths", removed)
	}
	names, err := listNetns()
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, name := range names {
		has[name] = true
	}
	if has[deadNS] || !has[liveNS] || !has[otherNS] {
		t.Errorf("after the sweep: %s there: %v, %s there: %v (want true), %s there: %v (want true)",
			deadNS, has[deadNS], liveNS, has[liveNS], otherNS, has[otherNS])
	}
	select {
	case <-orphanDone:
	case <-time.After(2 * time.Second):
		t.Error("the process in the dead process's namespace was not killed")
	}
	for _, path := range wantGone {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was not removed (%v)", path, err)
		}
	}
	for _, path := range kept {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s was removed: %v", path, err)
		}
	}
}

const watchdogChildEnv = "CVLAN_HARNESS_WATCHDOG_CHILD"

// TestWatchdog runs this test binary with a short -test.timeout and a test that hangs,
// and checks that the watchdog printed the logs and deleted the namespaces.
func TestWatchdog(t *testing.T) {
	if os.Getenv(watchdogChildEnv) != "" {
		h := New(t)
		ns := h.Netns("a")
		p := h.Start(ns, "sleeper", "sh", "-c", "echo sleeper-ready; exec sleep 1000")
		waitLog(t, p, "sleeper-ready", 1)
		fmt.Printf("sleeper pid %d\n", p.Pid())
		time.Sleep(time.Minute) // hang: the watchdog ends the process
		return
	}
	privileged.Require(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdog$", "-test.timeout=3s")
	cmd.Env = append(os.Environ(), watchdogChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("child: %v, want exit status 2; output:\n%s", err, out)
	}
	for _, want := range []string{"about to reach -test.timeout=3s", "test TestWatchdog (prefix", "--- sleeper (sh -c", "sleeper-ready"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
	names, err := listNetns()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, pidPrefix(cmd.Process.Pid)) {
			t.Errorf("the child's namespace %s is still there", name)
		}
	}
	if m := regexp.MustCompile(`sleeper pid (\d+)`).FindSubmatch(out); m == nil {
		t.Errorf("child did not print the sleeper's pid:\n%s", out)
	} else if pid, _ := strconv.Atoi(string(m[1])); !gone(pid) {
		t.Errorf("the sleeper %d is still alive", pid)
	}
}

func TestBinsIn(t *testing.T) {
	dir := t.TempDir()
	names := []string{"cvlan-controller", "cvlan-agent", "cvlan-relay", "cvlan-vrouter", "cvlanctl"}
	for _, name := range names[:4] {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := binsIn(dir); err == nil {
		t.Error("binsIn accepted a directory without cvlanctl")
	}
	if err := os.WriteFile(filepath.Join(dir, "cvlanctl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := binsIn(dir); err == nil {
		t.Error("binsIn accepted a cvlanctl that is not executable")
	}
	if err := os.Chmod(filepath.Join(dir, "cvlanctl"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := binsIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Ctl != filepath.Join(dir, "cvlanctl") || b.VRouter != filepath.Join(dir, "cvlan-vrouter") {
		t.Errorf("binsIn = %+v", b)
	}
}

// TestBuild builds a tiny module the way Binaries builds the repository.
func TestBuild(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	root, out := t.TempDir(), t.TempDir()
	mustWriteText(t, filepath.Join(root, "go.mod"), "module example.com/m\n\ngo 1.22\n")
	for _, name := range []string{"one", "two"} {
		mustWriteText(t, filepath.Join(root, "cmd", name, "main.go"), "package main\n\nfunc main() {}\n")
	}
	if err := build(root, out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"one", "two"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Error(err)
		}
	}
	mustWriteText(t, filepath.Join(root, "cmd", "bad", "main.go"), "package main\n\nfunc main() { x }\n")
	if err := build(root, out); err == nil || !strings.Contains(err.Error(), "undefined: x") {
		t.Errorf("building a broken command: err = %v, want the compiler's message", err)
	}
	wd, _ := os.Getwd()
	if got, err := moduleRoot(); err != nil || got != filepath.Dir(filepath.Dir(filepath.Dir(wd))) {
		t.Errorf("moduleRoot() = %q, %v; want the directory three levels above %s", got, err, wd)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 {
		t.Errorf("f ran %d times, want 3", n)
	}
}

// waitLog waits until p's log has n lines starting with s.
func waitLog(t *testing.T, p *Proc, s string, n int) {
	t.Helper()
	Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		got := 0
		for line := range strings.Lines(p.Log()) {
			if strings.HasPrefix(line, s) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("log of %s has %q %d times, want %d:\n%s", p.Name(), s, got, n, p.Log())
		}
		return nil
	})
}

// gone reports whether pid is no longer a running process (zombies count as gone: in a
// container nobody may reap the orphans).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	for range 10 {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		if pid := cmd.Process.Pid; !pidAlive(pid) {
			return pid
		}
	}
	t.Fatal("every pid of an exited process was reused at once")
	return 0
}

func mustWrite(t *testing.T, path string) { mustWriteText(t, path, "x") }

func mustWriteText(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
