package bpfpolicy

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/cvlan/cvlan/internal/e2e/harness"
	"github.com/cvlan/cvlan/internal/privileged"
	"github.com/cvlan/cvlan/policy"
)

// dnsPolicy lets udp 53, and tcp to port rule, in from 10.0.0.0/8 and fd00::/8,
// which it names identity id, by rule id rule.
func dnsPolicy(version int64, id policy.Identity, rule uint32) *policy.NodePolicy {
	return &policy.NodePolicy{
		Version: version,
		Prefixes: []policy.IdentityPrefix{
			{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Identity: id},
			{Prefix: netip.MustParsePrefix("fd00::/8"), Identity: id},
		},
		Rules: []policy.RuleEntry{
			{Direction: policy.Ingress, Identity: id, Proto: protoUDP, PortLo: 53, PortHi: 53, Verdict: policy.Accept, RuleID: rule},
			{Direction: policy.Ingress, Identity: id, Proto: protoTCP, PortLo: uint16(rule), PortHi: uint16(rule), Verdict: policy.Accept, RuleID: rule},
		},
		RuleNames: map[uint32]string{rule: "dns"},
	}
}

func (e *Enforcer) state(t testing.TB) policyPolicyState {
	t.Helper()
	var st policyPolicyState
	if err := e.objs.PolicyState.Lookup(uint32(0), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSet(t *testing.T) {
	e := loaded(t, nil, nil)
	dns := ip("10.1.1.1", local4, protoUDP, udp(40000, 53, 10))
	onlyA := ip("10.1.1.1", local4, protoTCP, tcp(40000, 1, 0))
	onlyB := ip("10.1.1.1", local4, protoTCP, tcp(40000, 2, 0))

	a, b := dnsPolicy(1, 1, 1), dnsPolicy(2, 2, 2)
	if err := e.Set(a); err != nil {
		t.Fatal(err)
	}
	step{in, dns, "pass:rule", 1}.check(t, e)
	step{in, onlyA, "pass:rule", 1}.check(t, e)
	step{in, onlyB, "drop:no_rule", 0}.check(t, e)

	if err := e.Set(a); !errors.Is(err, ErrNoChanges) {
		t.Errorf("Set of the enforced policy: %v, want ErrNoChanges", err)
	}
	gen := e.state(t).Active
	a3 := dnsPolicy(3, 1, 1)
	if err := e.Set(a3); err != nil {
		t.Errorf("Set of a new version with the same content: %v", err)
	}
	if st := e.state(t); st.Active != gen || st.Version != 3 {
		t.Errorf("new version, same content: generation %d version %d, want generation %d version 3", st.Active, st.Version, gen)
	}
	if err := e.Set(a3); !errors.Is(err, ErrNoChanges) {
		t.Errorf("Set of the enforced version: %v, want ErrNoChanges", err)
	}

	if err := e.Set(b); err != nil {
		t.Fatal(err)
	}
	if st := e.state(t); st.Active == gen || st.Version != 2 {
		t.Errorf("after a new policy: generation %d version %d, want the other generation and version 2", st.Active, st.Version)
	}
	step{in, dns, "pass:rule", 2}.check(t, e)
	step{in, onlyA, "drop:no_rule", 0}.check(t, e)
	step{in, onlyB, "pass:rule", 2}.check(t, e)
	counters, err := e.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := counters[1]; ok || len(counters) != 1 {
		t.Errorf("counters after switching to B: %v, want rule 2 only", counters)
	}

	// A policy that breaks the contract changes nothing.
	bad := dnsPolicy(4, 1, 1)
	bad.Rules[0].PortLo = 54
	if err := e.Set(bad); err == nil {
		t.Fatal("Set of a policy with an empty port range succeeded")
	}
	step{in, onlyB, "pass:rule", 2}.check(t, e)
}

// TestSwitchAtomic flips between two policies while packets run through the program.
// Under either policy the packets pass; under any mixture of the two (A's identities
// with B's rules, or the other way round) they match no rule and drop.
func TestSwitchAtomic(t *testing.T) {
	e := loaded(t, dnsPolicy(1, 1, 1), nil)
	pkts := [][]byte{
		ip("10.1.1.1", local4, protoUDP, udp(40000, 53, 10)),
		ip("fd00::7", local6, protoUDP, udp(40000, 53, 10)),
	}
	var stop atomic.Bool
	var runs atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, pkt := range pkts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ret, err := e.objs.CvlanIngress.Run(&ebpf.RunOptions{Data: pkt, Repeat: 100})
				if err != nil {
					errs <- err
					return
				}
				if ret != actOK {
					errs <- errors.New("a packet dropped during the switch")
					return
				}
				runs.Add(100)
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	flips := 0
	for ; flips < 40 && time.Now().Before(deadline); flips++ {
		p := dnsPolicy(int64(flips+2), 2, 2)
		if flips%2 == 1 {
			p = dnsPolicy(int64(flips+2), 1, 1)
		}
		if err := e.Set(p); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	drops, err := e.Drops()
	if err != nil {
		t.Fatal(err)
	}
	for reason, n := range drops {
		if n != 0 {
			t.Errorf("%d packets dropped (%s) across %d switches", n, reason, flips)
		}
	}
	t.Logf("%d switches, %d packets", flips, runs.Load())
	if flips < 10 || runs.Load() == 0 {
		t.Errorf("only %d switches and %d packets: the test proved little", flips, runs.Load())
	}
}

// TestRestartKeepsState: an Enforcer that loads the maps an earlier one pinned keeps
// the rules' counters, and its first policy clears what the earlier one left in the
// generation it writes, which it never saw.
func TestRestartKeepsState(t *testing.T) {
	privileged.Require(t)
	dir := pinDir(harness.New(t), "rs")
	if err := ensureBPFFS(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	open := func() *Enforcer {
		spec, err := loadSpec(true)
		if err != nil {
			t.Fatal(err)
		}
		e, err := load(spec, dir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	// One policy per source: udp 53 from 10.1/16 by rule 1, from 172.16/16 by rule 2,
	// from 192.168/16 by rule 3. The same prefix length, so that a prefix left over
	// in a generation would be found.
	only := func(version int64, pfx string, rule uint32) *policy.NodePolicy {
		p := dnsPolicy(version, policy.Identity(rule), rule)
		p.Prefixes = []policy.IdentityPrefix{{Prefix: netip.MustParsePrefix(pfx), Identity: policy.Identity(rule)}}
		return p
	}
	dns := func(src string) []byte { return ip(src, local4, protoUDP, udp(40000, 53, 10)) }

	e1 := open()
	if err := e1.Set(only(1, "10.1.0.0/16", 1)); err != nil { // the second generation
		t.Fatal(err)
	}
	if err := e1.Set(only(2, "172.16.0.0/16", 2)); err != nil { // the first
		t.Fatal(err)
	}
	step{in, dns("172.16.0.9"), "pass:rule", 2}.check(t, e1)
	step{in, dns("172.16.0.9"), "pass:rule", 2}.check(t, e1)
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}

	e2 := open()
	defer e2.Remove()
	if !e2.reused {
		t.Fatal("the second load did not see the pins of the first")
	}
	counters, err := e2.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c := counters[2]; c.Packets != 2 || len(counters) != 1 {
		t.Errorf("counters after the restart: %v, want rule 2's 2 packets", counters)
	}
	step{in, dns("172.16.0.9"), "pass:rule", 2}.check(t, e2)
	// This writes the generation that still holds the first policy (10.1/16).
	if err := e2.Set(only(3, "192.168.0.0/16", 3)); err != nil {
		t.Fatal(err)
	}
	step{in, dns("192.168.1.1"), "pass:rule", 3}.check(t, e2)
	step{in, dns("10.1.1.1"), "drop:no_rule", 0}.check(t, e2)
	step{in, dns("172.16.0.9"), "drop:no_rule", 0}.check(t, e2)
	if counters, err := e2.Counters(); err != nil || len(counters) != 1 || counters[3].Packets != 1 {
		t.Errorf("counters after the new policy: %v, %v; want rule 3's 1 packet", counters, err)
	}
}

// TestSetClearsOldGeneration: each policy is written over the one before the last;
// what that one had and the new one has not (a prefix of the same length, an
// identity record, a range) must be gone.
func TestSetClearsOldGeneration(t *testing.T) {
	e := loaded(t, nil, nil)
	only := func(version int64, pfx string, id policy.Identity, rules ...uint32) *policy.NodePolicy {
		p := &policy.NodePolicy{Version: version, Prefixes: []policy.IdentityPrefix{{Prefix: netip.MustParsePrefix(pfx), Identity: id}}}
		for _, r := range rules {
			p.Rules = append(p.Rules, policy.RuleEntry{Direction: policy.Ingress, Identity: id, Proto: protoUDP,
				PortLo: uint16(r), PortHi: uint16(r), Verdict: policy.Accept, RuleID: r})
		}
		return p
	}
	to := func(src string, port uint16) []byte { return ip(src, local4, protoUDP, udp(40000, port, 10)) }
	for _, s := range []struct {
		p     *policy.NodePolicy
		steps []step
	}{
		{only(1, "10.1.0.0/16", 1, 53, 54, 55), []step{{in, to("10.1.0.1", 55), "pass:rule", 55}}},
		{only(2, "10.2.0.0/16", 2, 53), []step{{in, to("10.2.0.1", 53), "pass:rule", 53}}},
		// Over the first: its prefix, its record (index 1) and two of its ranges go.
		{only(3, "10.3.0.0/16", 3, 53), []step{
			{in, to("10.3.0.1", 53), "pass:rule", 53},
			{in, to("10.3.0.1", 55), "drop:no_rule", 0},
			{in, to("10.1.0.1", 53), "drop:no_rule", 0},
			{in, to("10.2.0.1", 53), "drop:no_rule", 0},
		}},
		{only(4, "10.1.0.0/16", 1, 54), []step{
			{in, to("10.1.0.1", 54), "pass:rule", 54},
			{in, to("10.1.0.1", 55), "drop:no_rule", 0},
			{in, to("10.2.0.1", 53), "drop:no_rule", 0},
		}},
	} {
		if err := e.Set(s.p); err != nil {
			t.Fatal(err)
		}
		for _, st := range s.steps {
			st.check(t, e)
		}
	}
}
