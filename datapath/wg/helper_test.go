package wg

// The namespace tests run each WireGuard device in a helper process: the test binary
// itself, started with `ip netns exec NS <test binary>` and helperEnv set, which
// TestMain turns into runHelper instead of the tests. Everything the helper does (the
// TUN device, wireguard-go's UDP sockets and goroutines, wgctrl, datapath/route) then
// happens in that namespace on every thread, which a locked test goroutine could not
// promise for wireguard-go's goroutines. The parent sends JSON requests on the
// helper's stdin and reads one JSON answer per request on its stdout; the helper's
// log goes to stderr, shown when a test fails. When stdin closes (the test ends, or
// the parent dies) the helper closes its devices and exits.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/nl"
	"github.com/cvlan/cvlan/datapath/route"
)

const helperEnv = "CVLAN_WG_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// helperRequest asks the helper to do one thing to the device called Name.
type helperRequest struct {
	Op         string       `json:"op"` // open, set, route, stats, close
	Name       string       `json:"name"`
	Mode       Mode         `json:"mode,omitempty"`
	PrivateKey string       `json:"private_key,omitempty"` // key file form
	ListenPort int          `json:"listen_port,omitempty"`
	Peers      []Peer       `json:"peers,omitempty"`
	Route      route.Config `json:"route"`
}

type helperResponse struct {
	Err               string      `json:"err,omitempty"`
	NoChanges         bool        `json:"no_changes,omitempty"`
	InUse             bool        `json:"in_use,omitempty"`
	KernelUnsupported bool        `json:"kernel_unsupported,omitempty"`
	Impl              string      `json:"impl,omitempty"`
	Stats             []PeerStats `json:"stats,omitempty"`
}

// runHelper serves requests until in ends, then closes every device it opened.
func runHelper(in io.Reader, out io.Writer) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	devs := map[string]*Device{}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	for {
		var req helperRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return 0
			}
			log.Error("helper: reading request", "err", err)
			return 1
		}
		var resp helperResponse
		err := serve(devs, req, &resp, log)
		if err != nil {
			resp.Err = err.Error()
			resp.NoChanges = errors.Is(err, ErrNoChanges) || errors.Is(err, route.ErrNoChanges)
			resp.InUse = errors.Is(err, ErrInUse)
			resp.KernelUnsupported = errors.Is(err, ErrKernelUnsupported)
		}
		if err := enc.Encode(resp); err != nil {
			log.Error("helper: writing answer", "err", err)
			return 1
		}
	}
}

func serve(devs map[string]*Device, req helperRequest, resp *helperResponse, log *slog.Logger) error {
	d := devs[req.Name]
	if d == nil && req.Op != "open" && req.Op != "route" {
		return errors.New("helper: no device " + req.Name)
	}
	switch req.Op {
	case "open":
		d, err := Open(Options{Name: req.Name, Mode: req.Mode, Log: log})
		if err != nil {
			return err
		}
		devs[req.Name], resp.Impl = d, d.Impl()
		return nil
	case "set":
		k, err := key.ParsePrivate(req.PrivateKey)
		if err != nil {
			return err
		}
		return d.Set(Config{PrivateKey: k, ListenPort: req.ListenPort, Peers: req.Peers})
	case "route":
		h, err := nl.Open()
		if err != nil {
			return err
		}
		defer h.Close()
		return route.New(h).Set(req.Route)
	case "stats":
		s, err := d.Stats()
		resp.Stats = s
		return err
	case "close":
		delete(devs, req.Name)
		return d.Close()
	case "release":
		delete(devs, req.Name)
		return d.Release()
	}
	return errors.New("helper: unknown op " + req.Op)
}

// helper is the parent's side of one helper process.
type helper struct {
	t      *testing.T
	ns     string
	cmd    *exec.Cmd
	in     io.WriteCloser
	resp   chan helperResponse // closed when the helper's stdout ends
	stderr syncBuffer
}

// startHelper starts a helper in network namespace ns; the test's cleanup stops it.
func startHelper(t *testing.T, ns string) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not /proc/self/exe: ip would resolve that to itself.
	h := &helper{t: t, ns: ns, resp: make(chan helperResponse)}
	h.cmd = exec.Command("ip", "netns", "exec", ns, exe)
	h.cmd.Env = append(os.Environ(), helperEnv+"=1")
	h.cmd.Stderr = &h.stderr
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("starting helper in %s: %v", ns, err)
	}
	go func() {
		defer close(h.resp)
		dec := json.NewDecoder(out)
		for {
			var r helperResponse
			if err := dec.Decode(&r); err != nil {
				return
			}
			h.resp <- r
		}
	}()
	t.Cleanup(h.stop)
	return h
}

// stop closes the helper's stdin, so it closes its devices and exits, and kills it if
// it does not within a deadline.
func (h *helper) stop() {
	h.in.Close()
	deadline := time.After(15 * time.Second)
	for done := false; !done; {
		select {
		case _, ok := <-h.resp:
			done = !ok
		case <-deadline:
			h.t.Errorf("helper in %s did not exit; killing it", h.ns)
			h.cmd.Process.Kill()
			for range h.resp {
			}
			done = true
		}
	}
	if err := h.cmd.Wait(); err != nil {
		h.t.Errorf("helper in %s: %v", h.ns, err)
	}
	if h.t.Failed() {
		h.t.Logf("log of the helper in %s:\n%s", h.ns, h.stderr.String())
	}
}

// call sends req and returns the answer.
func (h *helper) call(req helperRequest) helperResponse {
	h.t.Helper()
	if err := json.NewEncoder(h.in).Encode(req); err != nil {
		h.t.Fatalf("helper in %s: sending %s: %v", h.ns, req.Op, err)
	}
	select {
	case r, ok := <-h.resp:
		if !ok {
			h.t.Fatalf("helper in %s exited during %s", h.ns, req.Op)
		}
		return r
	case <-time.After(30 * time.Second):
		h.t.Fatalf("helper in %s: no answer to %s %s", h.ns, req.Op, req.Name)
	}
	panic("unreachable")
}

// must is call that fails the test on any error but ErrNoChanges.
func (h *helper) must(req helperRequest) helperResponse {
	h.t.Helper()
	r := h.call(req)
	if r.Err != "" && !r.NoChanges {
		h.t.Fatalf("helper in %s: %s %s: %s", h.ns, req.Op, req.Name, r.Err)
	}
	return r
}

// syncBuffer is a bytes.Buffer that exec's copying goroutine and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
