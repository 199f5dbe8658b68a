package policy_test

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/cvlan/cvlan/policy"
)

func TestParseLanguage(t *testing.T) {
	doc := `
tags: [web, db, admin]
groups:
  admins: [tag:admin, alice]
  staff: [group:admins, bob]
hosts:
  office: 10.1.0.0/16
  one: 192.168.1.7
  v6: fd00::/8
rules:
  - name: admin-ssh
    src: [tag:admin, group:staff, host:office, alice, 10.0.0.0/8, "2001:db8::1", "*"]
    dst: tag:web
    ports: [22, "8000-8100", "8050-8200", 8201]
    proto: tcp
  - action: deny
    src: "*"
    dst: [tag:db]
    ports: 443
  - {src: [host:v6], dst: [db1], proto: icmp}
tests:
  - {src: tag:admin, dst: tag:web, port: 22, proto: tcp, expect: accept, rule: admin-ssh}
  - {src: alice, dst: 100.64.0.9, port: 443, expect: deny}
  - {src: host:one, dst: "fd00::1", proto: icmp, expect: deny}
`
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"web", "db", "admin"}; !reflect.DeepEqual(p.Tags, want) {
		t.Errorf("tags %v, want %v", p.Tags, want)
	}
	if len(p.Groups) != 2 || p.Groups[1].Name != "staff" || p.Groups[1].Members[0].String() != "group:admins" {
		t.Errorf("groups %+v", p.Groups)
	}
	if len(p.Hosts) != 3 || p.Hosts[1].Prefix != netip.MustParsePrefix("192.168.1.7/32") {
		t.Errorf("hosts %+v", p.Hosts)
	}
	if len(p.Rules) != 3 {
		t.Fatalf("%d rules", len(p.Rules))
	}
	r0, r1, r2 := p.Rules[0], p.Rules[1], p.Rules[2]
	var srcs []string
	for _, s := range r0.Src {
		srcs = append(srcs, s.String())
	}
	if want := "tag:admin group:staff host:office alice 10.0.0.0/8 2001:db8::1 *"; strings.Join(srcs, " ") != want {
		t.Errorf("src %q, want %q", strings.Join(srcs, " "), want)
	}
	if want := []policy.PortRange{{22, 22}, {8000, 8201}}; !reflect.DeepEqual(r0.Ports, want) {
		t.Errorf("ports %v, want merged %v", r0.Ports, want)
	}
	if r0.Proto != policy.TCP || r0.Action != policy.Accept || r0.Name != "admin-ssh" {
		t.Errorf("rule 0 %+v", r0)
	}
	if r1.Name != "rule-1" || r1.Action != policy.Deny || r1.Proto != policy.AnyProtocol || r1.Ports[0] != (policy.PortRange{443, 443}) {
		t.Errorf("rule 1 %+v", r1)
	}
	if r2.Proto != policy.ICMP || !reflect.DeepEqual(r2.Ports, []policy.PortRange{policy.AllPorts}) || r2.Dst[0].Kind != policy.SelectNode {
		t.Errorf("rule 2 %+v", r2)
	}
	if r0.Loc.Line != 11 || r0.Src[1].Loc.Path != "rules[0].src[1]" || r0.Src[1].Loc.Line != 12 {
		t.Errorf("locations: rule %+v, src[1] %+v", r0.Loc, r0.Src[1].Loc)
	}
	if len(p.Tests) != 3 || p.Tests[0].Rule != "admin-ssh" || p.Tests[1].Proto != policy.TCP || p.Tests[1].Port != 443 ||
		p.Tests[2].Proto != policy.ICMP || p.Tests[2].Expect != policy.Deny {
		t.Errorf("tests %+v", p.Tests)
	}
}

func TestParseJSONEqualsYAML(t *testing.T) {
	y := "tags: [web]\nrules:\n  - {name: r, src: tag:web, dst: [\"*\"], ports: [80, \"90-99\"], proto: udp}\n"
	j := `{"tags": ["web"], "rules": [{"name": "r", "src": "tag:web", "dst": ["*"], "ports": [80, "90-99"], "proto": "udp"}]}`
	py, err := policy.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	pj, err := policy.Parse([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	// Locations differ; everything else must not.
	strip := func(p *policy.Policy) policy.Rule {
		r := p.Rules[0]
		r.Loc = policy.Loc{}
		for i := range r.Src {
			r.Src[i].Loc = policy.Loc{}
		}
		for i := range r.Dst {
			r.Dst[i].Loc = policy.Loc{}
		}
		return r
	}
	if a, b := strip(py), strip(pj); a.Name != b.Name || !reflect.DeepEqual(a.Src, b.Src) || !reflect.DeepEqual(a.Dst, b.Dst) ||
		!reflect.DeepEqual(a.Ports, b.Ports) || a.Proto != b.Proto {
		t.Errorf("YAML gives %+v, JSON %+v", a, b)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, doc := range []string{"", "# nothing\n", "---\n", "{}", "rules: []\n"} {
		p, err := policy.Parse([]byte(doc))
		if err != nil || p == nil || len(p.Rules) != 0 {
			t.Errorf("Parse(%q) = %+v, %v; want an empty policy", doc, p, err)
		}
	}
}

// TestParseErrors checks that each mistake is reported with its place and a
// message naming what is wrong.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // each a whole error line
	}{
		{"unknown tag", "tags: [web]\nrules:\n  - {src: tag:wbe, dst: tag:web}\n",
			[]string{`3:11: rules[0].src: unknown tag "wbe"; did you mean tag:web?`}},
		{"unknown tag in list", "tags: [web]\nrules:\n  - src: [tag:web, tag:db]\n    dst: tag:web\n",
			[]string{`3:20: rules[0].src[1]: unknown tag "db"`}},
		{"no tags declared", "rules:\n  - {src: tag:web, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: unknown tag "web" (none are declared)`}},
		{"missing group", "rules:\n  - {src: group:ops, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: unknown group "ops" (none are declared)`}},
		{"group cycle", "groups:\n  a: [group:b]\n  b: [group:c]\n  c: [group:a]\n",
			[]string{`4:7: groups.c[0]: group cycle: a → b → c → a`}},
		{"self cycle", "groups:\n  a: [group:a]\n",
			[]string{`2:7: groups.a[0]: group cycle: a → a`}},
		{"address in group", "groups:\n  a: [10.0.0.1]\n",
			[]string{`2:7: groups.a[0]: groups hold node selectors (node names, tag:NAME, group:NAME), not 10.0.0.1; name addresses in hosts and rules`}},
		{"unknown host", "hosts:\n  office: 10.0.0.0/8\nrules:\n  - {src: host:ofice, dst: \"*\"}\n",
			[]string{`4:11: rules[0].src: unknown host "ofice"; did you mean host:office?`}},
		{"bad CIDR", "rules:\n  - {src: 10.0.0.0/33, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: "10.0.0.0/33" is not a valid CIDR`}},
		{"host bits", "rules:\n  - {src: 10.0.0.1/8, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?`}},
		{"bad IP", "rules:\n  - {src: 10.0.0.256, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: "10.0.0.256" is not a valid IP address`}},
		{"bad host", "hosts:\n  h: nowhere\n",
			[]string{`2:6: hosts.h: "nowhere" is not a CIDR or an IP`}},
		{"unknown selector kind", "rules:\n  - {src: user:bob, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: unknown selector kind "user:" in "user:bob" (want tag:, group:, host:, a CIDR, an IP or a node name)`}},
		{"port out of range", "rules:\n  - {src: \"*\", dst: \"*\", ports: [0, 65536]}\n",
			[]string{`2:34: rules[0].ports[0]: port 0 is out of range 1..65535`, `2:37: rules[0].ports[1]: port 65536 is out of range 1..65535`}},
		{"bad range", "rules:\n  - {src: \"*\", dst: \"*\", ports: \"90-80\"}\n",
			[]string{`2:33: rules[0].ports: port range "90-80" is backwards (90 > 80)`}},
		{"port not a number", "rules:\n  - {src: \"*\", dst: \"*\", ports: [http]}\n",
			[]string{`2:34: rules[0].ports[0]: "http" is not a port number, a range lo-hi or "*"`}},
		{"empty ports", "rules:\n  - {src: \"*\", dst: \"*\", ports: []}\n",
			[]string{`2:33: rules[0].ports: ports is empty; leave it out or write "*" for every port`}},
		{"icmp with ports", "rules:\n  - {src: \"*\", dst: \"*\", proto: icmp, ports: 7}\n",
			[]string{`2:46: rules[0].ports: ICMP has no ports; leave ports out of an icmp rule`}},
		{"unknown key", "rules:\n  - {src: \"*\", dst: \"*\", prot: tcp}\n",
			[]string{`2:26: rules[0].prot: unknown key "prot"; did you mean "proto"?`}},
		{"unknown top key", "rule: []\n",
			[]string{`1:1: rule: unknown key "rule"; did you mean "rules"?`}},
		{"duplicate key", "rules:\n  - {src: \"*\", dst: \"*\", src: x}\n",
			[]string{`2:26: rules[0].src: duplicate key "src" (first at line 2)`}},
		{"wrong type", "tags: web\n",
			[]string{`1:7: tags: want a list of tag names; got the string "web"`}},
		{"wrong type number", "tags: [1]\n",
			[]string{`1:8: tags[0]: want a tag name; got a number (1)`}},
		{"wrong type mapping", "rules:\n  - {src: {a: b}, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: want a list of selectors; got a mapping`}},
		{"not a mapping", "[1, 2]\n",
			[]string{`1:1: a policy is a mapping with tags, groups, hosts, rules and tests; got a list`}},
		{"duplicate rule name", "rules:\n  - {name: a, src: \"*\", dst: \"*\"}\n  - {name: a, src: \"*\", dst: \"*\"}\n",
			[]string{`3:12: rules[1].name: rule name "a" is already used by rules[0]`}},
		{"default name taken", "rules:\n  - {src: \"*\", dst: \"*\"}\n  - {name: rule-0, src: \"*\", dst: \"*\"}\n",
			[]string{`3:12: rules[1].name: rule name "rule-0" is already used by rules[0]`}},
		{"rule id collision", "rules:\n  - {name: rule949058, src: \"*\", dst: \"*\"}\n  - {name: rule1026336, src: \"*\", dst: \"*\"}\n",
			[]string{`3:12: rules[1].name: rule "rule1026336" has the same id (0x8cb61842) as rule "rule949058" (rules[0]); rename one of them`}},
		{"missing src", "rules:\n  - {dst: \"*\"}\n",
			[]string{`2:5: rules[0]: rule "rule-0" has no src`}},
		{"empty dst", "rules:\n  - {src: \"*\", dst: []}\n",
			[]string{`2:21: rules[0].dst: dst is empty; write "*" for any address`}},
		{"bad action", "rules:\n  - {src: \"*\", dst: \"*\", action: allow}\n",
			[]string{`2:34: rules[0].action: action must be one of accept, deny; got "allow"`}},
		{"bad proto", "rules:\n  - {src: \"*\", dst: \"*\", proto: sctp}\n",
			[]string{`2:33: rules[0].proto: proto must be one of tcp, udp, icmp, any; got "sctp"`}},
		{"uppercase node", "rules:\n  - {src: Alice, dst: \"*\"}\n",
			[]string{`2:11: rules[0].src: "Alice" is not "*", tag:, group:, host:, a CIDR, an IP or a node name: name "Alice" has upper case; names are lowercase ("alice")`}},
		{"tag prefix in declaration", "tags: [tag:web]\n",
			[]string{`1:8: tags[0]: declare tags without "tag:": write "web"`}},
		{"duplicate tag", "tags: [web, web]\n",
			[]string{`1:13: tags[1]: tag "web" is declared twice`}},
		{"alias", "tags: [web]\nrules:\n  - {src: &w [tag:web], dst: *w}\n",
			[]string{`3:30: rules[0].dst: YAML aliases (*w) are not supported; use a group`}},
		{"two documents", "tags: []\n---\ntags: []\n",
			[]string{`2:1: a policy is one document; found a second one (remove the "---")`}},
		{"syntax", "rules:\n  - {src: [*], dst: x}\n",
			[]string{`2: YAML syntax: did not find expected alphabetic or numeric character`}},
		{"test without expect", "tests:\n  - {src: a, dst: b, port: 1}\n",
			[]string{`2:5: tests[0]: a test needs expect`}},
		{"test without port", "tests:\n  - {src: a, dst: b, expect: deny}\n",
			[]string{`2:5: tests[0]: a tcp test needs a port`}},
		{"icmp test with port", "tests:\n  - {src: a, dst: b, proto: icmp, port: 1, expect: deny}\n",
			[]string{`2:41: tests[0].port: ICMP has no ports; leave port out of an icmp test`}},
		{"test any proto", "tests:\n  - {src: a, dst: b, proto: any, port: 1, expect: deny}\n",
			[]string{`2:29: tests[0].proto: a test's proto must be one of tcp, udp, icmp; got "any"`}},
		{"test star", "tests:\n  - {src: \"*\", dst: b, port: 1, expect: deny}\n",
			[]string{`2:11: tests[0].src: a test endpoint is one node or address; "*" is not`}},
		{"test CIDR", "tests:\n  - {src: 10.0.0.0/8, dst: b, port: 1, expect: deny}\n",
			[]string{`2:11: tests[0].src: a test endpoint is one node or address; 10.0.0.0/8 is a CIDR`}},
		{"test unknown rule", "tests:\n  - {src: a, dst: b, port: 1, expect: deny, rule: nope}\n",
			[]string{`2:5: tests[0]: test expects rule "nope", which is not a rule of this policy`}},
		{"test unknown tag", "tests:\n  - {src: tag:x, dst: b, port: 1, expect: deny}\n",
			[]string{`2:11: tests[0].src: unknown tag "x" (none are declared)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("no error; parsed %+v", p)
			}
			if p != nil {
				t.Errorf("got a policy with the error")
			}
			var errs policy.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			var got []string
			for _, e := range errs {
				if e.Msg == "" {
					t.Errorf("error without a message: %+v", e)
				}
				got = append(got, e.Error())
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("errors:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// TestParseCollectsAll: one document with several mistakes reports each, in order.
func TestParseCollectsAll(t *testing.T) {
	doc := "tags: [web]\nrules:\n  - {src: tag:x, dst: group:y, ports: [0], bogus: 1}\n  - {src: host:z, dst: \"*\"}\n"
	_, err := policy.Parse([]byte(doc))
	var errs policy.Errors
	if !errors.As(err, &errs) || len(errs) != 5 {
		t.Fatalf("want 5 errors, got %v", err)
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line || errs[i].Line == errs[i-1].Line && errs[i].Column < errs[i-1].Column {
			t.Errorf("errors out of order: %v", err)
		}
	}
}

func TestValidateGoPolicy(t *testing.T) {
	p := &policy.Policy{
		Tags:  []string{"web"},
		Rules: []policy.Rule{{Name: "", Src: nil, Dst: []policy.Selector{{Kind: policy.SelectTag, Name: "db"}}}},
		Tests: []policy.Test{{Src: policy.Selector{Kind: policy.SelectNode, Name: "a"}, Dst: policy.Selector{Kind: policy.SelectNode, Name: "b"}, Proto: policy.TCP}},
	}
	err := p.Validate()
	for _, want := range []string{"a rule name cannot be empty", `rule "" has an empty src`, `unknown tag "db"`, "has no ports", "a tcp test needs a port"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
	}
}

func TestParseSelector(t *testing.T) {
	for in, want := range map[string]policy.Selector{
		"*":           {Kind: policy.SelectAll},
		"tag:web":     {Kind: policy.SelectTag, Name: "web"},
		"group:ops":   {Kind: policy.SelectGroup, Name: "ops"},
		"host:lab":    {Kind: policy.SelectHost, Name: "lab"},
		"alice":       {Kind: policy.SelectNode, Name: "alice"},
		"web-01":      {Kind: policy.SelectNode, Name: "web-01"},
		"10.0.0.0/8":  {Kind: policy.SelectPrefix, Prefix: netip.MustParsePrefix("10.0.0.0/8")},
		"10.1.2.3":    {Kind: policy.SelectPrefix, Prefix: netip.MustParsePrefix("10.1.2.3/32")},
		"fe::1":       {Kind: policy.SelectPrefix, Prefix: netip.MustParsePrefix("fe::1/128")},
		"fd00::/8":    {Kind: policy.SelectPrefix, Prefix: netip.MustParsePrefix("fd00::/8")},
		"abc::/16":    {Kind: policy.SelectPrefix, Prefix: netip.MustParsePrefix("abc::/16")},
		"cafe::":      {Kind: policy.SelectPrefix, Prefix: netip.MustParsePrefix("cafe::/128")},
		"123":         {Kind: policy.SelectNode, Name: "123"},
		"a-very-long": {Kind: policy.SelectNode, Name: "a-very-long"},
	} {
		got, err := policy.ParseSelector(in)
		if err != nil || got != want {
			t.Errorf("ParseSelector(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && got.String() != in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), in)
		}
	}
	for _, in := range []string{"", "tag:", "tag:Web", "-x", "x-", "a_b", "a.b", "fe80::1%eth0", "1.2.3", "tag:x:y", strings.Repeat("a", 64)} {
		if got, err := policy.ParseSelector(in); err == nil {
			t.Errorf("ParseSelector(%q) = %+v, want an error", in, got)
		}
	}
}
