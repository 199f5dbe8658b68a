package harness

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Processes are started from one goroutine locked to its OS thread for the life of the
// test process (STYLE.md item 13). Before each start that thread enters the target
// namespace, and afterwards it goes back, so the child inherits the namespace without
// `ip netns exec` (which would give it a private /sys without the host's bpffs, where
// the agent pins its maps). Because the thread never exits, the children's Pdeathsig
// (SIGKILL) fires only when the test process itself dies.

// inNetnsReq asks the spawner to run fn while its thread is in the namespace at path.
type inNetnsReq struct {
	path string
	fn   func() error
	done chan error
}

var (
	spawnOnce sync.Once
	spawnReqs chan inNetnsReq
)

// inNetns runs fn on the spawner thread while that thread is in the network namespace
// bound at path. fn must not block for long: it holds up every other start.
func inNetns(path string, fn func() error) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan inNetnsReq)
		go spawner(spawnReqs)
	})
	req := inNetnsReq{path: path, fn: fn, done: make(chan error, 1)}
	spawnReqs <- req
	return <-req.done
}

// spawner serves requests on a locked thread. If the thread cannot return to its own
// namespace it hands the channel to a new spawner and parks forever, still locked, so
// that neither Go nor a later request runs on a thread in a foreign namespace and the
// children started from it keep their parent thread.
func spawner(reqs chan inNetnsReq) {
	runtime.LockOSThread()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		err = fmt.Errorf("opening the spawner thread's own network namespace: %w", err)
		for req := range reqs {
			req.done <- err
		}
		return
	}
	for req := range reqs {
		stuck, err := serve(home, req)
		req.done <- err
		if stuck {
			go spawner(reqs)
			select {} // keep the thread locked and alive
		}
	}
}

// serve enters req.path, runs req.fn and goes back home; stuck reports that going back
// failed.
func serve(home *os.File, req inNetnsReq) (stuck bool, err error) {
	target, err := os.Open(req.path)
	if err != nil {
		return false, fmt.Errorf("opening network namespace %s: %w", req.path, err)
	}
	defer target.Close()
	if err := setns(target); err != nil {
		return false, fmt.Errorf("entering network namespace %s: %w", req.path, err)
	}
	fnErr := req.fn()
	if err := setns(home); err != nil {
		return true, fmt.Errorf("returning from network namespace %s: %w", req.path, err)
	}
	return false, fnErr
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}
