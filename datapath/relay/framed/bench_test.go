package framed

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
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

// BenchmarkIdleConnections measures the heap and stacks held per idle,
// authenticated TLS connection. Clients and relay share the process, so the
// figure covers both ends; the relay's share is about half.
func BenchmarkIdleConnections(b *testing.B) {
	var lim syscall.Rlimit
	// Each connection takes two descriptors here (both ends). Raising the hard
	// limit needs CAP_SYS_RESOURCE; without it, take what the hard limit allows.
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < 30000 {
		want := syscall.Rlimit{Cur: 30000, Max: max(lim.Max, 30000)}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			// Where the limit cannot be raised, run as many as it allows (reported as
			// conns) rather than skip.
			if fit := int(lim.Cur-64) / 2; fit < n {
				n = fit
			}
			for range b.N {
				idle(b, n)
			}
			b.ReportMetric(float64(n), "conns")
		})
	}
}

func idle(b *testing.B, n int) {
	r := newTestRelay(b, nil)
	machines := make([]key.Private, n)
	for i := range machines {
		machines[i] = newPrivate(b)
		r.auth.set(machines[i].MachinePublic(), Grant{Tenant: "t", Node: newPrivate(b).NodePublic(), Peers: PeerSet{}})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	clients := make([]*Client, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var errOnce sync.Once
	var dialErr error
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c, err := Dial(ctx, DialConfig{URL: r.url(TransportTCP), RelayKey: r.srv.Public(), Machine: machines[i]})
			if err != nil {
				errOnce.Do(func() { dialErr = err })
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if dialErr != nil {
		b.Fatal(dialErr)
	}
	eventually(b, "all connections registered", func() bool { return r.srv.Clients()[TransportTCP] == int64(n) })
	connectTime := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := float64((after.HeapAlloc + after.StackInuse) - (before.HeapAlloc + before.StackInuse))
	b.ReportMetric(used/float64(n), "bytes/conn")
	b.ReportMetric(used/float64(n)*1000/1e6, "MB/1k_conns")
	b.ReportMetric(connectTime.Seconds(), "connect_s")
	for _, c := range clients {
		c.Close()
	}
}
