package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cvlan/cvlan/policy"
	"github.com/cvlan/cvlan/policy/policytest"
)

// seedCorpus adds every testdata policy to a fuzz target's corpus.
func seedCorpus(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds: %v", err)
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("tags: [web]\nrules:\n  - {src: tag:web, dst: \"*\", ports: [\"1-65535\"]}\n"))
	f.Add([]byte(`{"rules": [{"src": "10.0.0.0/8", "dst": "fd00::/8", "proto": "icmp"}]}`))
}

// FuzzParse: Parse never panics, and it returns either a valid policy or Errors
// that each say what is wrong.
func FuzzParse(f *testing.F) {
	seedCorpus(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data)
		if err == nil {
			if p == nil {
				t.Fatal("no policy and no error")
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("a parsed policy does not validate: %v", err)
			}
			return
		}
		if p != nil {
			t.Fatal("a policy with an error")
		}
		var errs policy.Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error %T is not Errors: %v", err, err)
		}
		for _, e := range errs {
			if e.Msg == "" || e.Line < 0 || e.Column < 0 {
				t.Fatalf("bad error %+v", e)
			}
		}
	})
}

// FuzzCompile: any document that parses compiles against a small fixed tenant
// without panicking (its own tests may fail), and without its tests it compiles
// and decides a few flows as the naive evaluator does.
func FuzzCompile(f *testing.F) {
	seedCorpus(f)
	nodes := policytest.FixedNodes()
	packets := policytest.FixedPackets()
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data)
		if err != nil {
			return
		}
		if _, err := policy.Compile(p, nodes); err != nil {
			var errs policy.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("a valid policy failed with %v, not failing tests", err)
			}
		}
		p.Tests = nil
		c, err := policy.Compile(p, nodes)
		if err != nil {
			t.Fatalf("a valid policy without tests does not compile: %v", err)
		}
		ev := policytest.New(p, nodes)
		for _, pk := range packets {
			v, rule := c.Decide(pk.Src, pk.Dst, pk.Proto, pk.Port)
			wv, wrule := ev.Decide(pk.Src, pk.Dst, pk.Proto, pk.Port)
			if v != wv || rule != wrule {
				t.Fatalf("%v: compiled %v %q, naive %v %q", pk, v, rule, wv, wrule)
			}
		}
		for _, n := range nodes {
			c.Node(n.ID)
			c.Peers(n.ID)
		}
	})
}
