package bpfpolicy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/cvlan/cvlan/internal/e2e/harness"
	"github.com/cvlan/cvlan/policy"
)

// peerPolicy is node A's policy with one peer, B (its addresses are identity 1), and
// entries for identity 1 only.
func peerPolicy(version int64, peer []string, rules ...policy.RuleEntry) *policy.NodePolicy {
	p := &policy.NodePolicy{Version: version, RuleNames: map[uint32]string{}}
	for _, a := range peer {
		p.Prefixes = append(p.Prefixes, policy.IdentityPrefix{Prefix: netip.PrefixFrom(netip.MustParseAddr(a), netip.MustParseAddr(a).BitLen()), Identity: 1})
	}
	for _, r := range rules {
		p.Rules = append(p.Rules, r)
		p.RuleNames[r.RuleID] = fmt.Sprint("rule-", r.RuleID)
	}
	return p
}

func entry(dir policy.Direction, proto uint8, port uint16, v policy.Verdict, rule uint32) policy.RuleEntry {
	lo, hi := port, port
	if proto == protoICMP || proto == protoICMPv6 {
		lo, hi = 0, 65535
	}
	return policy.RuleEntry{Direction: dir, Identity: 1, Proto: proto, PortLo: lo, PortHi: hi, Verdict: v, RuleID: rule}
}

// lan2 is two namespaces, a and b, joined by a veth pair (va in a, vb in b) with
// IPv4 and IPv6 addresses: a is the node under test. A direct pair rather than a
// harness LAN, because the bridge drops the malformed frames the tests send.
type lan2 struct {
	h          *harness.H
	a, b       *harness.NS
	ifA, ifB   string
	a4, b4     string
	a6, b6     string
	peerAddrsB []string
}

func newLAN2(t *testing.T) *lan2 {
	h := harness.New(t)
	l := &lan2{h: h, a: h.Netns("a"), b: h.Netns("b"), ifA: "va", ifB: "vb",
		a4: "10.99.0.1", b4: "10.99.0.2", a6: "fd99::1", b6: "fd99::2"}
	for _, args := range [][]string{
		// Made inside a, its peer moved into b: nothing appears in the host namespace.
		{"ip", "-n", l.a.Name, "link", "add", l.ifA, "type", "veth", "peer", "name", l.ifB, "netns", l.b.Name},
		{"ip", "-n", l.a.Name, "addr", "add", l.a4 + "/24", "dev", l.ifA},
		{"ip", "-n", l.a.Name, "addr", "add", l.a6 + "/64", "dev", l.ifA, "nodad"},
		{"ip", "-n", l.b.Name, "addr", "add", l.b4 + "/24", "dev", l.ifB},
		{"ip", "-n", l.b.Name, "addr", "add", l.b6 + "/64", "dev", l.ifB, "nodad"},
		{"ip", "-n", l.a.Name, "link", "set", l.ifA, "up"},
		{"ip", "-n", l.b.Name, "link", "set", l.ifB, "up"},
	} {
		if out, err := h.Run(l.a, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	l.peerAddrsB = []string{l.b4, l.b6}
	return l
}

func hostPort(addr string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}

// TestAttach attaches the programs to a veth (Ethernet mode) through TCX and through
// clsact, and checks real traffic in both directions, a policy swap, malformed
// frames from the wire, and Remove.
func TestAttach(t *testing.T) {
	for _, mode := range []struct {
		name   string
		clsact bool
	}{{"tcx", false}, {"clsact", true}} {
		t.Run(mode.name, func(t *testing.T) {
			l := newLAN2(t)
			if !mode.clsact {
				skipWithoutTCX(t, l.a)
			}
			e := openIn(t, l.a, Options{Interface: l.ifA, L2: true, PinDir: pinDir(l.h, "pa"), forceClsact: mode.clsact})
			if got := e.hooks[0].mode(); got != mode.name {
				t.Fatalf("attached through %s, want %s", got, mode.name)
			}
			in, out, accept, deny := policy.Ingress, policy.Egress, policy.Accept, policy.Deny
			p1 := peerPolicy(1, l.peerAddrsB,
				entry(in, protoICMP, 0, accept, 1), entry(in, protoICMPv6, 0, accept, 1),
				entry(in, protoTCP, 8080, accept, 2), entry(in, protoUDP, 9000, accept, 3),
				entry(out, protoUDP, 9100, accept, 4))
			if err := e.Set(p1); err != nil {
				t.Fatal(err)
			}
			echoServer(t, l.a, ":8080")
			echoServer(t, l.a, ":8081")
			sinkA := map[int]*udpSink{9000: listenUDP(t, l.a, ":9000"), 9001: listenUDP(t, l.a, ":9001")}
			sinkB := map[int]*udpSink{9100: listenUDP(t, l.b, ":9100"), 9101: listenUDP(t, l.b, ":9101")}

			// Ping in: the request passes by rule 1, the reply by conntrack.
			for _, addr := range []string{l.a4, l.a6} {
				eventually(t, 5*time.Second, func() error { return l.h.Ping(l.b, addr) })
			}
			// Ping out: no egress ICMP entry.
			if err := l.h.Ping(l.a, l.b4); err == nil {
				t.Error("ping from a to b passed; the policy has no egress ICMP")
			}
			// TCP in: 8080 by rule 2, with the server's segments passing as replies.
			c, err := dialTCP(l.b, hostPort(l.a4, 8080), 2*time.Second)
			if err != nil {
				t.Fatalf("connecting to 8080: %v", err)
			}
			defer c.Close()
			if err := echo(c, "hello"); err != nil {
				t.Fatalf("echo over 8080: %v", err)
			}
			noRule := grows(t, e, "drop:no_rule")
			if c, err := dialTCP(l.b, hostPort(l.a6, 8081), 300*time.Millisecond); err == nil {
				c.Close()
				t.Error("connected to 8081, which no rule allows")
			}
			eventually(t, time.Second, noRule)

			// UDP both ways; a denied datagram is seen dropped before the check that
			// its socket got nothing.
			for _, x := range []struct {
				from    *harness.NS
				to      string
				port    int
				sink    *udpSink
				allowed bool
			}{
				{l.b, l.a4, 9000, sinkA[9000], true},
				{l.b, l.a6, 9001, sinkA[9001], false},
				{l.a, l.b4, 9100, sinkB[9100], true},
				{l.a, l.b6, 9101, sinkB[9101], false},
			} {
				conn := dialUDP(t, x.from, hostPort(x.to, x.port))
				before := x.sink.n.Load()
				dropped := grows(t, e, "drop:no_rule")
				if _, err := conn.Write([]byte("datagram")); err != nil {
					t.Fatal(err)
				}
				if x.allowed {
					eventually(t, 2*time.Second, x.sink.receivedMoreThan(before))
					continue
				}
				eventually(t, 2*time.Second, dropped)
				if n := x.sink.n.Load(); n != before {
					t.Errorf("udp to %s port %d: received although no rule allows it", x.to, x.port)
				}
			}

			// A frame too short for its IPv4 header, straight from the wire.
			malformed := grows(t, e, "drop:malformed")
			sendRawFrame(t, l.b, l.ifB, append(broadcast(ethIPv4), make([]byte, 10)...))
			eventually(t, 2*time.Second, malformed)

			// A new policy that still allows 8080 keeps the established connection.
			p2 := peerPolicy(2, l.peerAddrsB, append(p1.Rules, entry(in, protoTCP, 22, accept, 5))...)
			if err := e.Set(p2); err != nil {
				t.Fatal(err)
			}
			if err := echo(c, "still there"); err != nil {
				t.Errorf("established connection after a policy change that still allows it: %v", err)
			}

			// Swap: no ICMP, 8080 denied, 8081 allowed.
			p3 := peerPolicy(3, l.peerAddrsB,
				entry(in, protoTCP, 8080, deny, 6), entry(in, protoTCP, 8081, accept, 7))
			if err := e.Set(p3); err != nil {
				t.Fatal(err)
			}
			c2, err := dialTCP(l.b, hostPort(l.a4, 8081), 2*time.Second)
			if err != nil {
				t.Fatalf("connecting to 8081 after the swap: %v", err)
			}
			if err := echo(c2, "new"); err != nil {
				t.Errorf("echo over 8081 after the swap: %v", err)
			}
			c2.Close()
			denied := grows(t, e, "drop:deny_rule")
			if c, err := dialTCP(l.b, hostPort(l.a4, 8080), 300*time.Millisecond); err == nil {
				c.Close()
				t.Error("connected to 8080 after the swap denied it")
			}
			eventually(t, time.Second, denied)
			if err := l.h.Ping(l.b, l.a4); err == nil {
				t.Error("ping passed after the swap removed ICMP")
			}
			counters, err := e.Counters()
			if err != nil {
				t.Fatal(err)
			}
			if counters[6].Packets == 0 || counters[7].Packets == 0 || len(counters) != 2 {
				t.Errorf("counters after the swap: %v, want packets on rules 6 and 7 only", counters)
			}

			// Remove: nothing filters any more.
			mustInNS(t, l.a, e.Remove)
			if _, err := os.Stat(e.pinDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pin directory after Remove: %v", err)
			}
			if mode.clsact {
				if has, err := inNSHasClsact(l.a, l.ifA); err != nil || has {
					t.Errorf("clsact filter after Remove: %v, %v", has, err)
				}
			}
			eventually(t, 5*time.Second, func() error { return l.h.Ping(l.a, l.b4) })
		})
	}
}

func broadcast(ethertype uint16) []byte {
	f := frame(ethertype, nil)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	return f
}

func inNSHasClsact(ns *harness.NS, ifname string) (bool, error) {
	var has bool
	err := inNS(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		has, err = hasClsactFilter(ifc.Index)
		return err
	})
	return has, err
}

// TestRestart closes the Enforcer while denied and allowed datagrams stream in, opens
// it again on the same pins, and checks that no denied datagram ever got through,
// that allowed traffic and an established connection survived, and that the new
// Enforcer took over the pinned maps and links instead of making new ones.
func TestRestart(t *testing.T) {
	for _, clsact := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcx", true: "clsact"}[clsact], func(t *testing.T) { testRestart(t, clsact) })
	}
}

func testRestart(t *testing.T, clsact bool) {
	l := newLAN2(t)
	if !clsact {
		skipWithoutTCX(t, l.a)
	}
	opts := Options{Interface: l.ifA, L2: true, PinDir: pinDir(l.h, "pa"), forceClsact: clsact}
	e := openIn(t, l.a, opts)
	in := policy.Ingress
	p := peerPolicy(1, l.peerAddrsB, entry(in, protoUDP, 9000, policy.Accept, 1), entry(in, protoTCP, 8080, policy.Accept, 2))
	if err := e.Set(p); err != nil {
		t.Fatal(err)
	}
	echoServer(t, l.a, ":8080")
	allowed, denied := listenUDP(t, l.a, ":9000"), listenUDP(t, l.a, ":9001")
	c, err := dialTCP(l.b, hostPort(l.a4, 8080), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Stream to both ports until the end of the test.
	toAllowed, toDenied := dialUDP(t, l.b, hostPort(l.a4, 9000)), dialUDP(t, l.b, hostPort(l.a4, 9001))
	var stop atomic.Bool
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !stop.Load() {
			<-tick.C
			toAllowed.Write([]byte("ok"))
			toDenied.Write([]byte("no"))
			sent.Add(1)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	eventually(t, 5*time.Second, allowed.receivedMoreThan(10))

	ids := func(e *Enforcer) (links [2]linkIDs, conntrack ebpf.MapID) {
		for i, h := range e.hooks {
			if clsact {
				links[i] = clsactIDs(t, l.a, l.ifA, h.ingress)
				continue
			}
			info, err := h.tcx.Info()
			if err != nil {
				t.Fatal(err)
			}
			links[i] = linkIDs{info.ID, info.Program}
		}
		mi, err := e.objs.Conntrack.Info()
		if err != nil {
			t.Fatal(err)
		}
		conntrack, _ = mi.ID()
		return links, conntrack
	}
	links1, ct1 := ids(e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Closed: the pinned programs still enforce.
	drops, err := ebpf.LoadPinnedMap(e.pinDir+"/"+policyMapDropCounters, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer drops.Close()
	dropped := func() uint64 {
		var vals []policyCounter
		if err := drops.Lookup(uint32(policyDropReasonDROP_NO_RULE), &vals); err != nil {
			t.Fatal(err)
		}
		return sum(vals).Packets
	}
	atClose, gotAtClose := dropped(), allowed.n.Load()
	eventually(t, 2*time.Second, func() error {
		if dropped() < atClose+20 || allowed.n.Load() < gotAtClose+20 {
			return errors.New("waiting for traffic while closed")
		}
		return nil
	})

	opts.forceClsact = false // the second Open must find the clsact filters by itself
	e2 := openIn(t, l.a, opts)
	if got, want := e2.hooks[0].mode(), e.hooks[0].mode(); got != want {
		t.Errorf("reopened through %s, want %s as before", got, want)
	}
	if !e2.reused {
		t.Error("the second Open did not see the pins of the first")
	}
	links2, ct2 := ids(e2)
	for i := range links1 {
		if links1[i].id != links2[i].id || links1[i].prog == links2[i].prog {
			t.Errorf("%s hook: link %d with program %d, then link %d with program %d; want the same link with a new program",
				e2.hooks[i].dir(), links1[i].id, links1[i].prog, links2[i].id, links2[i].prog)
		}
	}
	if ct1 != ct2 {
		t.Errorf("conntrack map %d, then %d: the pinned map was not reused", ct1, ct2)
	}
	if err := e2.Set(p); !errors.Is(err, ErrNoChanges) {
		t.Errorf("Set of the pinned policy after the restart: %v, want ErrNoChanges", err)
	}
	gotAtOpen := allowed.n.Load()
	eventually(t, 2*time.Second, allowed.receivedMoreThan(gotAtOpen+20))
	if err := echo(c, "across the restart"); err != nil {
		t.Errorf("established connection across the restart: %v", err)
	}
	stop.Store(true)
	wg.Wait()
	if n := denied.n.Load(); n != 0 {
		t.Errorf("%d datagrams to the denied port got through", n)
	}
	t.Logf("%d datagram pairs sent, %d allowed received", sent.Load(), allowed.n.Load())
}

// linkIDs identify an attachment: the TCX link (0 for a clsact filter) and its
// program.
type linkIDs struct {
	id   link.ID
	prog ebpf.ProgramID
}

// clsactIDs returns the program of cvlan's clsact filter in one direction, failing
// unless there is exactly one.
func clsactIDs(t testing.TB, ns *harness.NS, ifname string, ingress bool) linkIDs {
	t.Helper()
	var ids []linkIDs
	mustInNS(t, ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		return withNetlink(func(h *netlink.Handle) error {
			fs, err := h.FilterList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifc.Index}}, clsactParent(ingress))
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == clsactName {
					ids = append(ids, linkIDs{prog: ebpf.ProgramID(bf.Id)})
				}
			}
			return err
		})
	})
	if len(ids) != 1 {
		t.Fatalf("%d cvlan clsact filters (ingress %v), want 1", len(ids), ingress)
	}
	return ids[0]
}

// TestAttachTUN runs the programs on a TUN device, an L3 interface like the overlay's:
// packets written to the device arrive at its ingress, packets the kernel sends out
// of it are read back.
func TestAttachTUN(t *testing.T) {
	h := harness.New(t)
	ns := h.Netns("t")
	tun := tunDevice(t, ns, "cvtun0")
	for _, args := range [][]string{
		{"ip", "addr", "add", "10.98.0.1/24", "dev", "cvtun0"},
		{"ip", "link", "set", "cvtun0", "up"},
	} {
		if out, err := h.Run(ns, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	e := openIn(t, ns, Options{Interface: "cvtun0", PinDir: pinDir(h, "pt")})
	local, peer := netip.MustParseAddr("10.98.0.1"), netip.MustParseAddr("10.98.0.2")
	in, out := policy.Ingress, policy.Egress
	if err := e.Set(peerPolicy(1, []string{peer.String()},
		entry(in, protoICMP, 0, policy.Accept, 1), entry(in, protoUDP, 9000, policy.Accept, 2),
		entry(out, protoUDP, 9100, policy.Accept, 3))); err != nil {
		t.Fatal(err)
	}
	inject := func(pkt []byte) {
		t.Helper()
		if _, err := tun.Write(pkt); err != nil {
			t.Fatalf("writing to the TUN device: %v", err)
		}
	}
	isUDPTo := func(port uint16) func([]byte) bool {
		return func(b []byte) bool {
			return len(b) >= 28 && b[0]>>4 == 4 && b[9] == protoUDP && binary.BigEndian.Uint16(b[22:]) == port
		}
	}

	// Ping in: the echo request passes by rule, the kernel's reply by conntrack.
	req := icmp(icmpEchoRequest, 0, 4242, []byte("ping"))
	binary.BigEndian.PutUint16(req[2:], checksum(req))
	inject(ipv4(peer, local, protoICMP, 1, 0, false, req))
	if _, err := readPacket(tun, 2*time.Second, func(b []byte) bool {
		return len(b) >= 28 && b[9] == protoICMP && b[20] == icmpEchoReply && binary.BigEndian.Uint16(b[24:]) == 4242
	}); err != nil {
		t.Errorf("echo reply: %v", err)
	}

	// UDP in, allowed and denied.
	ok, no := listenUDP(t, ns, "10.98.0.1:9000"), listenUDP(t, ns, "10.98.0.1:9001")
	inject(ipv4(peer, local, protoUDP, 2, 0, false, udp(5555, 9000, 4)))
	eventually(t, 2*time.Second, ok.receivedMoreThan(0))
	dropped := grows(t, e, "drop:no_rule")
	inject(ipv4(peer, local, protoUDP, 3, 0, false, udp(5555, 9001, 4)))
	eventually(t, 2*time.Second, dropped)
	if no.n.Load() != 0 {
		t.Error("udp to 9001 received although no rule allows it")
	}

	// UDP out, allowed and denied.
	dropped = grows(t, e, "drop:no_rule")
	dialUDP(t, ns, "10.98.0.2:9101").Write([]byte("no"))
	eventually(t, 2*time.Second, dropped)
	dialUDP(t, ns, "10.98.0.2:9100").Write([]byte("ok"))
	if _, err := readPacket(tun, 2*time.Second, isUDPTo(9100)); err != nil {
		t.Errorf("udp out to 9100: %v", err)
	}

	// Truncated headers straight from the device, which BPF_PROG_TEST_RUN refuses.
	for _, pkt := range [][]byte{
		ipv4(peer, local, protoUDP, 4, 0, false, nil)[:12],
		ipv6(netip.MustParseAddr("fd98::2"), netip.MustParseAddr("fd98::1"), protoUDP, nil)[:30],
	} {
		malformed := grows(t, e, "drop:malformed")
		inject(pkt)
		eventually(t, 2*time.Second, malformed)
	}
}

func TestOpenErrors(t *testing.T) {
	h := harness.New(t)
	ns := h.Netns("o")
	try := func(opts Options) error {
		var e *Enforcer
		err := inNS(ns, func() (err error) {
			e, err = Open(opts)
			return err
		})
		if e != nil {
			e.Close()
		}
		return err
	}
	if err := try(Options{Interface: "nosuchdev", PinDir: pinDir(h, "o1")}); err == nil {
		t.Error("Open on a missing interface succeeded")
	}
	if err := try(Options{Interface: "lo", PinDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("Open with a pin directory outside bpffs: %v", err)
	}
	// A map of another layout pinned under a name the programs use.
	dir := pinDir(h, "o2")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "conntrack", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, policyMapConntrack)); err != nil {
		t.Fatal(err)
	}
	if err := try(Options{Interface: "lo", PinDir: dir}); !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Errorf("Open over incompatible pinned maps: %v, want ErrMapIncompatible", err)
	}
}
