package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/internal/e2e/harness"
)

// TestAgents: three agents enroll with one key and every pair pings over the
// overlay; a node deleted with cvlanctl is dropped by the others within 5 s and its
// agent stops; enrolling with an expired key fails with a clear message.
func TestAgents(t *testing.T) {
	l := newLab(t)
	for i, n := range []string{"a", "b", "c"} {
		l.addAgent(n, 11+i, l.secret)
	}
	nodes := l.waitNodes("a", "b", "c")
	l.allPing(firstContact, nodes, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		l.checkWireGuard(l.agents[n])
	}
	if m := l.metrics(l.agents["a"]); !strings.Contains(m, `wireguard="userspace"`) && !strings.Contains(m, `wireguard="kernel"`) ||
		!strings.Contains(m, "cvlan_agent_peers 2") || !strings.Contains(m, "cvlan_agent_control_connected 1") {
		t.Fatalf("agent a's metrics lack the implementation, 2 peers or the connection:\n%s", m)
	}

	l.must("node", "delete", "c", "--tenant", "acme")
	start := time.Now()
	harness.Eventually(t, deltaWithin, poll, func() error {
		for _, from := range []string{"a", "b"} {
			if l.h.Ping(l.agents[from].ns, nodes["c"].IPv4) == nil {
				return errorf("%s still reaches the deleted node c", from)
			}
		}
		return nil
	})
	t.Logf("deleted node c unreachable from a and b after %s", time.Since(start).Round(time.Millisecond))
	code, err := l.agents["c"].proc.Wait(deltaWithin)
	if err != nil || code != 1 || !strings.Contains(l.agents["c"].proc.Log(), "deleted") {
		t.Fatalf("agent c after its node was deleted: exit %d, %v; log:\n%s", code, err, l.agents["c"].proc.Log())
	}
	if f := l.matrix(nodes, "a", "b"); len(f) > 0 {
		t.Fatalf("a and b lost each other: %v", f)
	}

	var k struct{ Secret string }
	l.mustJSON(&k, "key", "create", "--tenant", "acme", "--network", "prod", "--expiry", "1s")
	time.Sleep(1100 * time.Millisecond) // the key's own lifetime, not synchronization
	d := l.addAgent("d", 20, k.Secret)
	code, err = d.proc.Wait(20 * time.Second)
	if err != nil || code != 1 || !strings.Contains(d.proc.Log(), "expired") {
		t.Fatalf("agent with an expired key: exit %d, %v; want exit 1 and a message saying the key expired; log:\n%s", code, err, d.proc.Log())
	}
	t.Logf("expired key refused: %s", lastLine(d.proc.Log()))
	if _, ok := l.nodes()["d"]; ok {
		t.Fatal("an expired key enrolled a node")
	}
}

// TestFailStatic: with the controller down pings continue; an agent restarted
// while the controller is still down recovers from its saved map; when the
// controller returns, the agent reconnects.
func TestFailStatic(t *testing.T) {
	l := newLab(t)
	l.addAgent("a", 11, l.secret)
	l.addAgent("b", 12, l.secret)
	nodes := l.waitNodes("a", "b")
	l.allPing(firstContact, nodes, "a", "b")

	if err := l.ctl.Stop(); err != nil {
		t.Fatal(err)
	}
	if f := l.matrix(nodes, "a", "b"); len(f) > 0 {
		t.Fatalf("pings stopped with the controller: %v", f)
	}
	a := l.agents["a"]
	if err := a.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	if !exists(a.stateDir + "/map.json") {
		t.Fatal("agent a saved no network map")
	}
	if err := a.proc.Restart(); err != nil {
		t.Fatal(err)
	}
	l.allPing(firstContact, nodes, "a", "b")
	if !strings.Contains(a.proc.Log(), "applying the saved network map") {
		t.Fatalf("agent a did not restore its saved map:\n%s", a.proc.Log())
	}
	if m := l.metrics(a); !strings.Contains(m, "cvlan_agent_control_connected 0") {
		t.Fatalf("agent a claims a control connection while the controller is down:\n%s", m)
	}

	if err := l.ctl.Restart(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, firstContact, poll, func() error {
		for _, n := range []string{"a", "b"} {
			if !strings.Contains(l.metrics(l.agents[n]), "cvlan_agent_control_connected 1") {
				return errorf("agent %s has not reconnected", n)
			}
		}
		return nil
	})
	l.allPing(deltaWithin, nodes, "a", "b")
}

// TestKeyRotation: after rotate-key, every pair still pings and the old key is
// gone from every peer.
func TestKeyRotation(t *testing.T) {
	l := newLab(t)
	for i, n := range []string{"a", "b", "c"} {
		l.addAgent(n, 11+i, l.secret)
	}
	nodes := l.waitNodes("a", "b", "c")
	l.allPing(firstContact, nodes, "a", "b", "c")
	old := nodes["b"].NodeKey

	l.must("node", "rotate-key", "b", "--tenant", "acme")
	harness.Eventually(t, deltaWithin, poll, func() error {
		now := l.nodes()["b"]
		if now.NodeKey == old {
			return errorf("controller still has b's old key")
		}
		for _, n := range []string{"a", "c"} {
			m := l.metrics(l.agents[n])
			if strings.Contains(m, old) {
				return errorf("agent %s still has b's old key %s", n, old)
			}
			if !strings.Contains(m, now.NodeKey) {
				return errorf("agent %s does not have b's new key %s", n, now.NodeKey)
			}
		}
		return nil
	})
	l.allPing(deltaWithin, nodes, "a", "b", "c")
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
