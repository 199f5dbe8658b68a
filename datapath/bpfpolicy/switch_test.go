package bpfpolicy

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

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
