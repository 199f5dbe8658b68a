package framed

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/noiseconn"
	"github.com/cvlan/cvlan/internal/selfsigned"
)

// BenchmarkFramedThroughput sends 1200-byte packets from one client to another
// through a relay on loopback (TLS, then WebSocket over TLS). The relay drops the
// oldest queued packet when the receiver falls behind, so it reports delivered
// packets per second next to the drops.
func BenchmarkFramedThroughput(b *testing.B) {
	for _, tr := range []string{TransportTCP, TransportWS} {
		b.Run(tr, func(b *testing.B) {
			r := newTestRelay(b, func(c *Config) { c.QueueLen = 4096 })
			src, dst := pair(b, r, tr)
			pkt := make([]byte, 1200)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			got := make(chan int, 1)
			go func() {
				n := 0
				for {
					_, p, err := dst.c.Recv()
					if err != nil {
						got <- n
						return
					}
					n++
					if int(p[0])<<24|int(p[1])<<16|int(p[2])<<8|int(p[3]) == b.N-1 {
						got <- n
						return
					}
				}
			}()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				pkt[0], pkt[1], pkt[2], pkt[3] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
				if err := src.c.Send(dst.node, pkt); err != nil {
					b.Fatal(err)
				}
			}
			n := <-got
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(n)/el.Seconds(), "delivered_pkts/s")
			b.ReportMetric(float64(n)*float64(len(pkt))/el.Seconds()/1e6, "delivered_MB/s")
			b.ReportMetric(float64(r.srv.Drops()[dropQueueFull])/float64(b.N), "dropped/op")
		})
	}
}

// idleClientsEnv, when set in the environment of the test binary, makes it the
// client side of BenchmarkIdleConnections instead of running tests: it holds
// "url relay-key count" and the process dials that many clients, prints
// "ready" and keeps them until its stdin closes.
const idleClientsEnv = "CVLAN_FRAMED_IDLE_CLIENTS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(idleClientsEnv); spec != "" {
		if err := idleClients(spec); err != nil {
			fmt.Fprintln(os.Stderr, "idle clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkIdleConnections measures the relay's memory per idle, authenticated
// connection, at 1k and 10k connections over TLS and over WebSocket (TLS). The
// relay runs in the benchmark process, configured as cvlan-relay configures it;
// the clients run in a child process (this test binary again), so the figures
// are the relay's alone. All traffic stays on loopback.
//
// Metrics, per 1000 connections: heap in use plus goroutine stacks
// (heap+stack_MB/1k) and resident memory (rss_MB/1k), both measured after a GC
// and after returning free memory to the OS; goroutines per connection.
func BenchmarkIdleConnections(b *testing.B) {
	const most = 10000
	// The relay holds one descriptor per connection, a client process up to
	// three per client (a WebSocket client also has a loopback bridge). Raising
	// the hard limit needs CAP_SYS_RESOURCE; without it, the relay takes what the
	// hard limit allows and the clients are spread over several processes.
	lim := raiseFileLimit(most + 256)
	for _, tr := range []string{TransportTCP, TransportWS} {
		for _, n := range []int{1000, most} {
			b.Run(fmt.Sprintf("%s/%d", tr, n), func(b *testing.B) {
				// Where the limit is too low even for the relay, run as many as it
				// allows (reported as conns) rather than skip.
				n = min(n, int(lim)-256)
				perProcess := int(lim-256) / 3
				for range b.N {
					idleRelay(b, tr, n, perProcess)
				}
			})
		}
	}
}

// raiseFileLimit raises RLIMIT_NOFILE to want if it can, else to the hard limit,
// and returns the soft limit in force.
func raiseFileLimit(want uint64) uint64 {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < want {
		up := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) != nil {
			up = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}

// relayMemory is what the relay process holds: heap in use, goroutine stacks,
// resident memory and goroutines.
type relayMemory struct {
	heapStack, rss uint64
	goroutines     int
}

func measureRelay(b *testing.B) relayMemory {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return relayMemory{heapStack: ms.HeapInuse + ms.StackInuse, rss: rss(b), goroutines: runtime.NumGoroutine()}
}

// rss returns the resident set size of the process in bytes.
func rss(b *testing.B) uint64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// idleRelay runs a relay, has child processes connect n clients over transport,
// at most perProcess each, and reports the relay's memory per connection.
func idleRelay(b *testing.B, transport string, n, perProcess int) {
	b.StopTimer()
	// The relay as cvlan-relay runs it: an http.Server over TLS (HTTP/1.1 only)
	// with a self-signed ECDSA certificate, on loopback.
	cert, _, err := selfsigned.Load("", "", b.TempDir(), "cvlan-relay", nil)
	if err != nil {
		b.Fatal(err)
	}
	node := AuthorizerFunc(func(m key.MachinePublic) (Grant, error) {
		return Grant{Tenant: "t", Node: key.NodePublicFromRaw(m.Raw()), Peers: PeerSet{}}, nil
	})
	srv, err := NewServer(Config{Key: newPrivate(b), Authorizer: node})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(noiseconn.Path, srv)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	go hs.ServeTLS(ln, "", "")
	defer func() {
		hs.Close()
		srv.Close()
	}()
	url := "https://" + ln.Addr().String()
	if transport == TransportWS {
		url = "wss://" + ln.Addr().String()
	}

	before := measureRelay(b)
	start := time.Now()
	b.StartTimer()
	for left := n; left > 0; left -= perProcess {
		stop := startIdleClients(b, url, srv.Public(), min(left, perProcess))
		defer stop()
	}
	eventually(b, "all connections registered", func() bool { return srv.Clients()[transport] == int64(n) })
	b.StopTimer()
	connect := time.Since(start)
	// Idle is not silent: wait until the relay read about a keepalive per
	// connection (the clients send one every idleKeepAlive), so that each has
	// handled a frame.
	in := &srv.metrics.tr[trIndex(transport)].framesIn
	eventually(b, "keepalives", func() bool { return in.Load() >= uint64(n) })
	after := measureRelay(b)
	perK := func(v uint64, w uint64) float64 { return (float64(v) - float64(w)) / float64(n) * 1000 / 1e6 }
	b.ReportMetric(perK(after.heapStack, before.heapStack), "heap+stack_MB/1k")
	b.ReportMetric(perK(after.rss, before.rss), "rss_MB/1k")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/conn")
	b.ReportMetric(float64(n), "conns")
	b.ReportMetric(connect.Seconds(), "connect_s")
	if p := os.Getenv("CVLAN_FRAMED_IDLE_HEAPPROFILE"); p != "" {
		writeHeapProfile(b, fmt.Sprintf("%s.%s.%d", p, transport, n))
	}
}

// startIdleClients starts a child process that connects n idle clients to the
// relay at url, waits until they are connected and returns a func that ends it.
func startIdleClients(b *testing.B, url string, relay key.RelayPublic, n int) (stop func()) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", idleClientsEnv, url, relay, n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop = func() {
		stdin.Close()
		cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		stop()
		b.Fatalf("client process: %q, %v", line, err)
	}
	return stop
}

// idleKeepAlive is how often the idle clients send a keepalive.
const idleKeepAlive = 2 * time.Second

// idleClients is the client process of BenchmarkIdleConnections.
func idleClients(spec string) error {
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fmt.Errorf("%s=%q: want url, relay key and count", idleClientsEnv, spec)
	}
	relay, err := key.ParseRelayPublic(f[1])
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return err
	}
	raiseFileLimit(uint64(3*n + 256))
	clients := make([]*Client, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 32)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m, err := key.NewPrivate()
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				clients[i], err = Dial(ctx, DialConfig{URL: f[0], RelayKey: relay, Machine: m, KeepAlive: idleKeepAlive})
				cancel()
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range clients {
		c.Close()
	}
	return nil
}

// writeHeapProfile writes the heap profile to path, for finding what the relay
// holds per connection (go tool pprof -sample_index=inuse_space).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}
