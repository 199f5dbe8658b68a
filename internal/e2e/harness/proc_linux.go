package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// killWait bounds the wait for a process to go after SIGKILL.
const killWait = 5 * time.Second

// Proc is a process started by H.Start in a namespace, in a process group of its own,
// with stdout and stderr appended to its log file. Its methods are safe for concurrent
// use.
type Proc struct {
	name    string
	argv    []string
	ns      *NS
	h       *H
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd     // the current run; nil before the first start
	done   chan struct{} // closed when the current run has exited and been reaped
	starts int
}

// Start runs argv in ns, in its own process group, with stdout and stderr in a log file
// and the harness's directory as working directory. name identifies the process in
// reports. The process gets SIGKILL if the test process dies. It fails the test if the
// process cannot be started.
func (h *H) Start(ns *NS, name string, argv ...string) *Proc {
	h.t.Helper()
	if len(argv) == 0 || ns == nil {
		h.t.Fatalf("harness: Start(%q) needs a namespace and a command", name)
	}
	file := strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == 0 {
			return '_'
		}
		return r
	}, name)
	h.mu.Lock()
	if n := h.logs[file]; n > 0 {
		h.logs[file]++
		file += "." + strconv.Itoa(n+1)
	} else {
		h.logs[file] = 1
	}
	h.mu.Unlock()
	p := &Proc{
		name:    name,
		argv:    append([]string(nil), argv...),
		ns:      ns,
		h:       h,
		logPath: filepath.Join(h.logDir(), file+".log"),
	}
	if err := p.start(); err != nil {
		h.t.Fatalf("harness: %v", err)
	}
	return p
}

// start starts a run of p and registers p with the harness (first run only).
func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("starting %s: it is still running", p.name)
		}
	}
	p.h.mu.Lock()
	defer p.h.mu.Unlock() // held across the start so that cleanup cannot miss the process
	if p.h.closed {
		return fmt.Errorf("starting %s: %w", p.name, errClosed)
	}

	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("starting %s: opening its log: %w", p.name, err)
	}
	defer log.Close() // the child has its own copy
	p.starts++
	fmt.Fprintf(log, "=== harness: start %d of %s in %s: %s\n", p.starts, p.name, p.ns.Name, strings.Join(p.argv, " "))

	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.h.root
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := inNetns(p.ns.Path(), cmd.Start); err != nil {
		return fmt.Errorf("starting %s (%s) in %s: %w", p.name, strings.Join(p.argv, " "), p.ns.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		cmd.Wait() // the exit status stays in cmd.ProcessState
		close(done)
	}()
	if p.starts == 1 {
		p.h.procs = append(p.h.procs, p)
	}
	return nil
}

// current returns the current run, or nil, nil before the first start.
func (p *Proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// signal sends sig to the current run's process group, unless the run has been reaped
// (its group id could belong to someone else by then).
func (p *Proc) signal(sig syscall.Signal) {
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	default:
		syscall.Kill(-cmd.Process.Pid, sig)
	}
}

// Name returns the name given to Start.
func (p *Proc) Name() string { return p.name }

// Pid returns the pid of the current run (also its process group id).
func (p *Proc) Pid() int {
	cmd, _ := p.current()
	if cmd == nil {
		return 0
	}
	return cmd.Process.Pid
}

// Stop sends SIGTERM to the process group and waits StopTimeout for the process to
// exit, then sends SIGKILL. It returns an error if SIGKILL was needed; a process that
// has already exited is no error. Wait returns the exit status afterwards.
func (p *Proc) Stop() error {
	cmd, done := p.current()
	if cmd == nil {
		return nil
	}
	p.signal(syscall.SIGTERM)
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
	}
	p.signal(syscall.SIGKILL)
	select {
	case <-done:
		return fmt.Errorf("%s did not exit within %v of SIGTERM and was killed", p.name, StopTimeout)
	case <-time.After(killWait):
		return fmt.Errorf("%s did not exit within %v of SIGTERM, nor of SIGKILL", p.name, StopTimeout)
	}
}

// Kill sends SIGKILL to the process group, as a crash would, and waits for the process
// to go.
func (p *Proc) Kill() {
	_, done := p.current()
	if done == nil {
		return
	}
	p.signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(killWait):
	}
}

// Wait waits up to timeout for the current run to exit and returns its exit code (-1 if
// a signal ended it). The error says that it did not exit in time or never started.
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	cmd, done := p.current()
	if cmd == nil {
		return -1, fmt.Errorf("%s was never started", p.name)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode(), nil
	case <-timer.C:
		return -1, fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

// Exited reports whether the current run has exited.
func (p *Proc) Exited() bool {
	_, done := p.current()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Restart stops the process like Stop and starts it again with the same argv in the
// same namespace, appending to the same log. It fails the test if the new run cannot
// start, and returns Stop's error (the process is restarted either way).
func (p *Proc) Restart() error {
	p.h.t.Helper()
	stopErr := p.Stop()
	if err := p.start(); err != nil {
		p.h.t.Fatalf("harness: restarting: %v", err)
	}
	return stopErr
}

// Log returns everything the process (all its runs) has written so far, with a
// "=== harness: start N …" line before each run.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(reading the log of %s: %v)", p.name, err)
	}
	return string(b)
}

// LogPath returns the file the process logs to; it is removed by the cleanup.
func (p *Proc) LogPath() string { return p.logPath }

// Run runs argv to completion in ns, with RunTimeout, and returns its combined stdout
// and stderr. The error says that the command failed, with its exit status, or timed
// out; the output is returned in either case.
func (h *H) Run(ns *NS, argv ...string) (string, error) {
	return h.RunTimeout(ns, RunTimeout, argv...)
}

// RunTimeout is Run with a timeout of its own.
func (h *H) RunTimeout(ns *NS, timeout time.Duration, argv ...string) (string, error) {
	if ns == nil || len(argv) == 0 {
		return "", errors.New("harness: Run needs a namespace and a command")
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return "", fmt.Errorf("running %s: %w", argv[0], errClosed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = h.root
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	what := strings.Join(argv, " ")
	if err := inNetns(ns.Path(), cmd.Start); err != nil {
		return "", fmt.Errorf("running %s in %s: %w", what, ns.Name, err)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("running %s in %s: timed out after %v", what, ns.Name, timeout)
	}
	if err != nil {
		return out.String(), fmt.Errorf("running %s in %s: %w", what, ns.Name, err)
	}
	return out.String(), nil
}

// Ping sends one ping (ping -n -c1 -W1, with -6 for an IPv6 address) from ns to addr
// and returns nil if the reply came. Use it inside Eventually.
func (h *H) Ping(from *NS, addr string) error {
	argv := []string{"ping", "-n", "-c1", "-W1"}
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() && !a.Is4In6() {
		argv = append(argv, "-6")
	}
	argv = append(argv, addr)
	out, err := h.RunTimeout(from, 5*time.Second, argv...)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %w: %s", addr, from.Name, err,
			strings.Join(strings.Fields(strings.ReplaceAll(out, "\n", " ; ")), " "))
	}
	return nil
}
