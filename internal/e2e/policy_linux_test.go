package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cvlan/cvlan/internal/e2e/harness"
)

// policyWithin is how soon a policy change must be in force on every agent.
const policyWithin = 2 * time.Second

const basePolicy = `tags: [web, db, admin]
rules:
  - {name: admin-ssh, src: [tag:admin], dst: [tag:web], ports: [22], proto: tcp}
  - {name: web-db, src: [tag:web], dst: [tag:db], ports: [5432], proto: tcp}
  - {name: admin-ping, src: [tag:admin], dst: ["*"], proto: icmp}
`

// tagged starts one agent per tag, each enrolled with a key carrying that tag, and
// a TCP echo listener on ports 22, 5432 and 8080 in each namespace.
func (l *lab) tagged(tags ...string) map[string]node {
	for i, tag := range tags {
		var k struct{ Secret string }
		l.mustJSON(&k, "key", "create", "--tenant", "acme", "--network", "prod", "--tags", tag, "--expiry", "1h")
		a := l.addAgent(tag, 11+i, k.Secret)
		l.h.Start(a.ns, "listen-"+tag, "env", probeEnv+"=listen 22,5432,8080", os.Args[0])
	}
	return l.waitNodes(tags...)
}

func (l *lab) setPolicy(doc string) {
	l.t.Helper()
	f := filepath.Join(l.h.TempDir(), "policy.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		l.t.Fatal(err)
	}
	l.must("policy", "set", "--tenant", "acme", "-f", f)
}

// connect reports whether a TCP connection from agent from to node to's port gets
// an echo.
func (l *lab) connect(from string, to node, port int) bool {
	_, err := l.h.RunTimeout(l.agents[from].ns, 5*time.Second, "env", probeEnv+"=connect "+to.IPv4+":"+strconv.Itoa(port), os.Args[0])
	return err == nil
}

type flow struct {
	from, to string
	port     int
	allowed  bool
}

// flowsHold polls until every flow is allowed or denied as listed.
func (l *lab) flowsHold(within time.Duration, nodes map[string]node, flows []flow) {
	l.t.Helper()
	harness.Eventually(l.t, within, poll, func() error {
		var bad []string
		for _, f := range flows {
			if got := l.connect(f.from, nodes[f.to], f.port); got != f.allowed {
				bad = append(bad, fmt.Sprintf("%s->%s:%d allowed=%v, want %v", f.from, f.to, f.port, got, f.allowed))
			}
		}
		if len(bad) > 0 {
			return errorf("%s", strings.Join(bad, "; "))
		}
		return nil
	})
}

// TestPolicy: allowed TCP connects succeed and denied ones fail in both
// directions; a policy change is in force on every agent within 2 s and does not
// break an established allowed flow; cvlanctl explains decisions and counters.
func TestPolicy(t *testing.T) {
	l := newLab(t)
	nodes := l.tagged("web", "db", "admin")
	l.allPing(firstContact, nodes, "web", "db", "admin") // no policy yet: allow all
	l.setPolicy(basePolicy)
	base := []flow{
		{"admin", "web", 22, true}, {"web", "db", 5432, true},
		{"admin", "web", 8080, false}, {"web", "admin", 22, false}, {"db", "web", 5432, false},
		{"admin", "db", 5432, false}, {"db", "web", 22, false}, {"web", "db", 22, false},
	}
	l.flowsHold(firstContact, nodes, base)

	out := l.must("policy", "test", "--tenant", "acme", "admin", "web", "22/tcp")
	if !strings.Contains(out, "accept") || !strings.Contains(out, "admin-ssh") {
		t.Fatalf("policy test admin web 22/tcp: %q", out)
	}
	counted := regexp.MustCompile(`cvlan_agent_policy_rule_packets_total\{rule="admin-ssh",rule_id="\d+"\} [1-9]`)
	harness.Eventually(t, deltaWithin, poll, func() error {
		if !l.connect("admin", nodes["web"], 22) {
			return errorf("admin->web:22 refused")
		}
		if m := l.metrics(l.agents["web"]); !counted.MatchString(m) {
			return errorf("web's metrics show no packets for admin-ssh:\n%s", grepLines(m, "cvlan_agent_policy"))
		}
		return nil
	})

	// An established allowed flow survives a policy change that adds a rule.
	hold := l.h.Start(l.agents["web"].ns, "hold-web-db", "env", probeEnv+"=hold "+nodes["db"].IPv4+":5432", os.Args[0])
	harness.Eventually(t, firstContact, poll, func() error {
		if !strings.Contains(hold.Log(), "ok 3") {
			return errorf("the held flow has not started")
		}
		return nil
	})
	l.setPolicy(basePolicy + "  - {name: db-web-http, src: [tag:db], dst: [tag:web], ports: [8080], proto: tcp}\n")
	start := time.Now()
	l.flowsHold(policyWithin, nodes, []flow{{"db", "web", 8080, true}})
	t.Logf("new rule in force after %s", time.Since(start).Round(time.Millisecond))
	before := strings.Count(hold.Log(), "ok ")
	harness.Eventually(t, firstContact, poll, func() error {
		if strings.Contains(hold.Log(), "lost") {
			return nil // reported below
		}
		if strings.Count(hold.Log(), "ok ") < before+5 {
			return errorf("the held flow stalled after the policy change")
		}
		return nil
	})
	if strings.Contains(hold.Log(), "lost") {
		t.Fatalf("the established web->db flow broke on the policy change:\n%s", hold.Log())
	}
	l.flowsHold(policyWithin, nodes, base)

	// With db's agent stopped, what was denied stays denied.
	if err := l.agents["db"].proc.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []flow{{"admin", "db", 5432, false}, {"web", "db", 22, false}} {
		if l.connect(f.from, nodes[f.to], f.port) {
			t.Errorf("%s->%s:%d allowed while db's agent is stopped", f.from, f.to, f.port)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
