package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse reads one policy document, YAML or JSON (JSON is YAML), and validates it.
// On any mistake it returns a nil Policy and an Errors holding every mistake found,
// each with its line, column and path. An empty document is a valid empty policy,
// which denies everything.
func Parse(data []byte) (*Policy, error) {
	var d decoder
	p := d.parse(data)
	if p != nil {
		d.errs = append(d.errs, p.validate()...)
	}
	if err := d.errs.errOrNil(); err != nil {
		return nil, err
	}
	return p, nil
}

// decoder turns a yaml.Node tree into a Policy, collecting errors as it goes and
// keeping what it could read so that later checks see as much as possible.
type decoder struct {
	errs Errors
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns an error of the YAML parser into an Error with its line.
func syntaxError(err error) Error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Error{Line: line, Msg: "YAML syntax: " + m[2]}
	}
	return Error{Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}

func (d *decoder) parse(data []byte) *Policy {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return &Policy{}
	} else if err != nil {
		d.errs = append(d.errs, syntaxError(err))
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.errs = append(d.errs, syntaxError(err))
		return nil
	default:
		d.errs.add(Loc{Line: extra.Line, Column: extra.Column}, "a policy is one document; found a second one (remove the \"---\")")
		return nil
	}
	p := &Policy{}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return p
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return p
	}
	if root.Kind != yaml.MappingNode {
		d.errs.add(locOf(root, ""), "a policy is a mapping with tags, groups, hosts, rules and tests; got %s", kindName(root))
		return p
	}
	d.mapping(root, "", []string{"tags", "groups", "hosts", "rules", "tests"}, func(key string, _, val *yaml.Node) {
		switch key {
		case "tags":
			d.tags(p, val)
		case "groups":
			d.groups(p, val)
		case "hosts":
			d.hosts(p, val)
		case "rules":
			d.rules(p, val)
		case "tests":
			d.tests(p, val)
		}
	})
	return p
}

func locOf(n *yaml.Node, path string) Loc {
	return Loc{Line: n.Line, Column: n.Column, Path: path}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// kindName says what a node is, for messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.Tag {
	case "!!null":
		return "null"
	case "!!int":
		return "a number (" + n.Value + ")"
	case "!!float":
		return "a number (" + n.Value + ")"
	case "!!bool":
		return "a boolean (" + n.Value + ")"
	}
	return fmt.Sprintf("the string %q", n.Value)
}

// alias reports an alias, which the policy language does not support: groups do
// the same job and keep every error at the place it was written.
func (d *decoder) alias(n *yaml.Node, path string) bool {
	if n.Kind != yaml.AliasNode {
		return false
	}
	d.errs.add(locOf(n, path), "YAML aliases (*%s) are not supported; use a group", n.Value)
	return true
}

// mapping calls fn for each entry of a mapping, in document order, after checking
// that keys are known strings and not repeated. A null value is an empty mapping.
// keys nil allows any key (the caller checks it).
func (d *decoder) mapping(n *yaml.Node, path string, keys []string, fn func(key string, keyNode, val *yaml.Node)) {
	if isNull(n) || d.alias(n, path) {
		return
	}
	if n.Kind != yaml.MappingNode {
		want := "a mapping"
		if keys != nil {
			want = "a mapping with keys " + strings.Join(keys, ", ")
		}
		d.errs.add(locOf(n, path), "want %s; got %s", want, kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if d.alias(k, path) {
			continue
		}
		if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
			d.errs.add(locOf(k, path), "keys are strings; got %s", kindName(k))
			continue
		}
		kp := join(path, k.Value)
		if line, dup := seen[k.Value]; dup {
			d.errs.add(locOf(k, kp), "duplicate key %q (first at line %d)", k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		if keys != nil && !contains(keys, k.Value) {
			msg := fmt.Sprintf("unknown key %q (want one of %s)", k.Value, strings.Join(keys, ", "))
			if s := suggest(k.Value, keys); s != "" {
				msg = fmt.Sprintf("unknown key %q; did you mean %q?", k.Value, s)
			}
			d.errs.add(locOf(k, kp), "%s", msg)
			continue
		}
		fn(k.Value, k, v)
	}
}

// list calls fn for each item of a list. A null value is an empty list; a scalar is
// a list of one when scalarOK (then its path has no index).
func (d *decoder) list(n *yaml.Node, path, what string, scalarOK bool, fn func(path string, item *yaml.Node)) {
	if isNull(n) || d.alias(n, path) {
		return
	}
	if n.Kind == yaml.ScalarNode && scalarOK {
		fn(path, n)
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errs.add(locOf(n, path), "want a list of %s; got %s", what, kindName(n))
		return
	}
	for i, item := range n.Content {
		ip := index(path, i)
		if d.alias(item, ip) {
			continue
		}
		fn(ip, item)
	}
}

// str returns a scalar string value.
func (d *decoder) str(n *yaml.Node, path, what string) (string, bool) {
	if d.alias(n, path) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.errs.add(locOf(n, path), "want %s; got %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

// word returns a scalar that must be one of words.
func (d *decoder) word(n *yaml.Node, path, what string, words []string) (string, bool) {
	s, ok := d.str(n, path, what)
	if !ok {
		return "", false
	}
	if !contains(words, s) {
		d.errs.add(locOf(n, path), "%s must be one of %s; got %q", what, strings.Join(words, ", "), s)
		return "", false
	}
	return s, true
}

// selector parses a scalar selector and records where it was written.
func (d *decoder) selector(n *yaml.Node, path string) (Selector, bool) {
	s, ok := d.str(n, path, "a selector (\"*\", tag:NAME, group:NAME, host:NAME, a CIDR, an IP or a node name)")
	if !ok {
		return Selector{}, false
	}
	sel, err := ParseSelector(s)
	if err != nil {
		d.errs.add(locOf(n, path), "%v", err)
		return Selector{}, false
	}
	sel.Loc = locOf(n, path)
	return sel, true
}

func (d *decoder) tags(p *Policy, n *yaml.Node) {
	d.list(n, "tags", "tag names", false, func(path string, item *yaml.Node) {
		s, ok := d.str(item, path, "a tag name")
		if !ok {
			return
		}
		if name, found := strings.CutPrefix(s, "tag:"); found {
			d.errs.add(locOf(item, path), "declare tags without \"tag:\": write %q", name)
			s = name
		}
		if err := checkName(s); err != nil {
			d.errs.add(locOf(item, path), "tag %v", err)
			return
		}
		p.Tags = append(p.Tags, s)
		p.tagLocs = append(p.tagLocs, locOf(item, path))
	})
}

func (d *decoder) groups(p *Policy, n *yaml.Node) {
	d.mapping(n, "groups", nil, func(name string, k, val *yaml.Node) {
		path := join("groups", name)
		g := Group{Name: name, Loc: locOf(k, path)}
		d.list(val, path, "node selectors", false, func(ip string, item *yaml.Node) {
			if sel, ok := d.selector(item, ip); ok {
				g.Members = append(g.Members, sel)
			}
		})
		p.Groups = append(p.Groups, g)
	})
}

func (d *decoder) hosts(p *Policy, n *yaml.Node) {
	d.mapping(n, "hosts", nil, func(name string, k, val *yaml.Node) {
		path := join("hosts", name)
		h := Host{Name: name, Loc: locOf(k, path)}
		if s, ok := d.str(val, path, "a CIDR or an IP"); ok {
			sel, err := ParseSelector(s)
			switch {
			case err != nil && strings.Contains(err.Error(), "host bits"):
				d.errs.add(locOf(val, path), "%v", err)
			case err != nil || sel.Kind != SelectPrefix:
				d.errs.add(locOf(val, path), "%q is not a CIDR or an IP", s)
			default:
				h.Prefix = sel.Prefix
			}
		}
		p.Hosts = append(p.Hosts, h)
	})
}

var ruleKeys = []string{"name", "action", "src", "dst", "ports", "proto"}

func (d *decoder) rules(p *Policy, n *yaml.Node) {
	i := 0
	d.list(n, "rules", "rules", false, func(path string, item *yaml.Node) {
		r := Rule{
			Name:   "rule-" + strconv.Itoa(i),
			Action: Accept,
			Ports:  []PortRange{AllPorts},
			Loc:    locOf(item, path),
		}
		i++
		var hasSrc, hasDst bool
		var portsNode *yaml.Node
		d.mapping(item, path, ruleKeys, func(key string, _, val *yaml.Node) {
			kp := join(path, key)
			switch key {
			case "name":
				if s, ok := d.str(val, kp, "a rule name"); ok {
					r.Name = s
					r.nameLoc = locOf(val, kp)
				}
			case "action":
				if s, ok := d.word(val, kp, "action", []string{"accept", "deny"}); ok && s == "deny" {
					r.Action = Deny
				}
			case "src", "dst":
				var sels []Selector
				d.list(val, kp, "selectors", true, func(ip string, it *yaml.Node) {
					if sel, ok := d.selector(it, ip); ok {
						sels = append(sels, sel)
					}
				})
				if isNull(val) || val.Kind == yaml.SequenceNode && len(val.Content) == 0 {
					d.errs.add(locOf(val, kp), "%s is empty; write \"*\" for any address", key)
				}
				if key == "src" {
					r.Src, hasSrc = sels, true
				} else {
					r.Dst, hasDst = sels, true
				}
				r.sideLoc[btoi(key == "dst")] = locOf(val, kp)
			case "ports":
				portsNode = val
				r.Ports = d.ports(val, kp)
			case "proto":
				if s, ok := d.word(val, kp, "proto", []string{"tcp", "udp", "icmp", "any"}); ok {
					r.Proto = protocolByName(s)
				}
			}
		})
		if item.Kind == yaml.MappingNode {
			if !hasSrc {
				d.errs.add(locOf(item, path), "rule %q has no src", r.Name)
			}
			if !hasDst {
				d.errs.add(locOf(item, path), "rule %q has no dst", r.Name)
			}
			if portsNode != nil && r.Proto == ICMP && !r.allPorts() {
				d.errs.add(locOf(portsNode, join(path, "ports")), "ICMP has no ports; leave ports out of an icmp rule")
				r.Ports = []PortRange{AllPorts}
			}
		}
		p.Rules = append(p.Rules, r)
	})
}

func protocolByName(s string) Protocol {
	for i, n := range protocolNames {
		if n == s {
			return Protocol(i)
		}
	}
	return AnyProtocol
}

// ports reads a rule's ports: a port, a range, "*" or a list of them; the result
// is sorted with overlapping and adjacent ranges merged.
func (d *decoder) ports(n *yaml.Node, path string) []PortRange {
	var out []PortRange
	saw := false
	d.list(n, path, "ports", true, func(ip string, item *yaml.Node) {
		saw = true
		if d.alias(item, ip) {
			return
		}
		if item.Kind != yaml.ScalarNode || (item.Tag != "!!int" && item.Tag != "!!str") {
			d.errs.add(locOf(item, ip), "want a port, a range lo-hi or \"*\"; got %s", kindName(item))
			return
		}
		pr, err := ParsePorts(item.Value)
		if err != nil {
			d.errs.add(locOf(item, ip), "%v", err)
			return
		}
		out = append(out, pr)
	})
	if !saw && !isNull(n) && n.Kind == yaml.SequenceNode {
		d.errs.add(locOf(n, path), "ports is empty; leave it out or write \"*\" for every port")
	}
	if len(out) == 0 {
		return []PortRange{AllPorts}
	}
	return mergePorts(out)
}

// mergePorts sorts ranges and merges those that overlap or touch.
func mergePorts(rs []PortRange) []PortRange {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Lo < rs[j].Lo || rs[i].Lo == rs[j].Lo && rs[i].Hi < rs[j].Hi })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if uint32(r.Lo) <= uint32(last.Hi)+1 {
			if r.Hi > last.Hi {
				last.Hi = r.Hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

var testKeys = []string{"src", "dst", "port", "proto", "expect", "rule"}

func (d *decoder) tests(p *Policy, n *yaml.Node) {
	d.list(n, "tests", "tests", false, func(path string, item *yaml.Node) {
		t := Test{Proto: TCP, Loc: locOf(item, path)}
		var has [3]bool // src, dst, expect
		bad := false
		var portNode *yaml.Node
		d.mapping(item, path, testKeys, func(key string, _, val *yaml.Node) {
			kp := join(path, key)
			switch key {
			case "src", "dst":
				i := btoi(key == "dst")
				has[i] = true
				sel, ok := d.selector(val, kp)
				bad = bad || !ok
				if i == 0 {
					t.Src = sel
				} else {
					t.Dst = sel
				}
			case "port":
				portNode = val
				if val.Kind != yaml.ScalarNode || (val.Tag != "!!int" && val.Tag != "!!str") {
					d.errs.add(locOf(val, kp), "want a port number; got %s", kindName(val))
					return
				}
				port, err := parsePort(val.Value)
				if err != nil {
					d.errs.add(locOf(val, kp), "%v", err)
					return
				}
				t.Port = port
			case "proto":
				if s, ok := d.word(val, kp, "a test's proto", []string{"tcp", "udp", "icmp"}); ok {
					t.Proto = protocolByName(s)
				}
			case "expect":
				has[2] = true
				if s, ok := d.word(val, kp, "expect", []string{"accept", "deny"}); ok && s == "accept" {
					t.Expect = Accept
				}
			case "rule":
				if s, ok := d.str(val, kp, "a rule name"); ok {
					t.Rule = s
				}
			}
		})
		if item.Kind != yaml.MappingNode {
			return
		}
		for i, what := range []string{"src", "dst", "expect"} {
			if !has[i] {
				d.errs.add(t.Loc, "a test needs %s", what)
			}
		}
		switch {
		case t.Proto == ICMP && portNode != nil:
			d.errs.add(locOf(portNode, join(path, "port")), "ICMP has no ports; leave port out of an icmp test")
		case t.Proto != ICMP && portNode == nil:
			d.errs.add(t.Loc, "a %s test needs a port", t.Proto)
		}
		if has[0] && has[1] && has[2] && !bad {
			p.Tests = append(p.Tests, t)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the candidate closest to s if it is close enough to be a typo:
// one edit (an insertion, deletion, substitution or swap of neighbours) for short
// names, two for longer ones.
func suggest(s string, candidates []string) string {
	limit := 1
	if len(s) > 4 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b, or a
// large number when their lengths alone put them more than 2 apart.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 || len(a)-len(b) > 2 || len(b)-len(a) > 2 {
		return 64
	}
	var rows [3][65]int // two rows back, one back, current
	prev2, prev, cur := &rows[0], &rows[1], &rows[2]
	for j := 0; j <= len(b); j++ {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
