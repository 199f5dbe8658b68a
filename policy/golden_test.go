package policy_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cvlan/cvlan/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// readNodes reads a node list: YAML, a list of {id, name, tags, addrs, routes}.
func readNodes(t testing.TB, path string) []policy.Node {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw []struct {
		ID, Name string
		Tags     []string
		Addrs    []string
		Routes   []string
	}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var nodes []policy.Node
	for _, r := range raw {
		n := policy.Node{ID: r.ID, Name: r.Name, Tags: r.Tags}
		for _, a := range r.Addrs {
			n.Addrs = append(n.Addrs, netip.MustParseAddr(a))
		}
		for _, p := range r.Routes {
			n.Routes = append(n.Routes, netip.MustParsePrefix(p))
		}
		nodes = append(nodes, n)
	}
	return nodes
}

// nodesFor returns the nodes a golden policy is compiled against: NAME.nodes
// next to it, or testdata/default.nodes.
func nodesFor(t testing.TB, policyPath string) []policy.Node {
	own := strings.TrimSuffix(policyPath, ".yaml") + ".nodes"
	if _, err := os.Stat(own); err == nil {
		return readNodes(t, own)
	}
	return readNodes(t, filepath.Join("testdata", "default.nodes"))
}

// probes are the flows the golden matrix shows for every ordered pair of nodes.
var probes = []struct {
	proto uint8
	port  uint16
}{{policy.ProtoTCP, 22}, {policy.ProtoTCP, 443}, {policy.ProtoTCP, 5432}, {policy.ProtoTCP, 8085}, {policy.ProtoUDP, 53}, {policy.ProtoICMP, 0}}

// render is the golden text of a policy file: the errors, or the compiled dump
// followed by who can reach whom.
func render(t testing.TB, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	nodes := nodesFor(t, path)
	var b bytes.Buffer
	p, err := policy.Parse(data)
	if err == nil {
		var c *policy.Compiled
		c, err = policy.Compile(p, nodes)
		if err == nil {
			if err := c.Dump(&b); err != nil {
				t.Fatal(err)
			}
			b.WriteString("reachability:\n")
			for _, s := range nodes {
				for _, d := range nodes {
					if s.ID == d.ID {
						continue
					}
					fmt.Fprintf(&b, "  %s → %s:", s.Name, d.Name)
					for _, pr := range probes {
						v, rule := c.Decide(policy.NodeEndpoint(s.ID), policy.NodeEndpoint(d.ID), pr.proto, pr.port)
						label := policy.ProtoName(pr.proto)
						if pr.proto != policy.ProtoICMP {
							label += fmt.Sprint("/", pr.port)
						}
						if v == policy.Accept {
							fmt.Fprintf(&b, " %s=%s", label, rule)
						} else if rule != "" {
							fmt.Fprintf(&b, " %s=!%s", label, rule)
						}
					}
					b.WriteString("\n")
				}
			}
			return b.Bytes()
		}
	}
	var errs policy.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("%s: error %v is not policy.Errors", path, err)
	}
	b.WriteString("errors:\n")
	for _, e := range errs {
		if e.Msg == "" {
			t.Errorf("%s: error without a message: %+v", path, e)
		}
		fmt.Fprintf(&b, "  %s\n", e.Error())
	}
	return b.Bytes()
}

// TestGolden compiles each testdata/*.yaml and compares with its .golden file;
// go test ./policy -update rewrites them.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			got := render(t, path)
			if again := render(t, path); !bytes.Equal(got, again) {
				t.Fatalf("two compiles of %s differ", path)
			}
			golden := strings.TrimSuffix(path, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./policy -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s (run go test ./policy -update and review the diff):\n%s", path, golden, diff(want, got))
			}
		})
	}
}

// diff shows the first lines that differ.
func diff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 10; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}
