package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"unicode"
)

// Validate checks what Parse checks once the document is read: names, that every
// tag, group and host used is declared, that groups hold only node selectors and
// have no cycles, rule names and ids, ports, and the shape of tests. It returns
// Errors, or nil when the policy is sound.
func (p *Policy) Validate() error {
	return p.validate().errOrNil()
}

// parsed reports whether loc came from a document (a Policy built in Go has none).
func (l Loc) parsed() bool { return l.Line > 0 }

// names is what the validated names of a policy refer to.
type names struct {
	tags   map[string]bool
	groups map[string]*Group
	hosts  map[string]netip.Prefix
	// sorted are the declared tag, group and host names, for suggestions, and
	// suggestions how many more unknown names may get one: finding the closest
	// name is not free, and a document full of unknown names must stay cheap.
	sorted      *[3][]string
	suggestions *int
}

func (p *Policy) names() names {
	n := names{tags: map[string]bool{}, groups: map[string]*Group{}, hosts: map[string]netip.Prefix{},
		sorted: new([3][]string), suggestions: new(int)}
	*n.suggestions = maxSuggestions
	for _, t := range p.Tags {
		n.tags[t] = true
	}
	for i := range p.Groups {
		if _, dup := n.groups[p.Groups[i].Name]; !dup {
			n.groups[p.Groups[i].Name] = &p.Groups[i]
		}
	}
	for _, h := range p.Hosts {
		if _, dup := n.hosts[h.Name]; !dup {
			n.hosts[h.Name] = h.Prefix
		}
	}
	n.sorted[0], n.sorted[1], n.sorted[2] = keys(n.tags), keys(n.groups), keys(n.hosts)
	return n
}

// maxSuggestions bounds the "did you mean" hints of one validation.
const maxSuggestions = 50

// clone copies the names so that a Compiled does not share the Policy's groups.
func (n names) clone() names {
	out := names{tags: n.tags, hosts: n.hosts, groups: make(map[string]*Group, len(n.groups)),
		sorted: n.sorted, suggestions: new(int)}
	*out.suggestions = maxSuggestions
	for name, g := range n.groups {
		out.groups[name] = &Group{Name: g.Name, Members: slices.Clone(g.Members), Loc: g.Loc}
	}
	return out
}

func (p *Policy) tagLoc(i int) Loc {
	if i < len(p.tagLocs) {
		return p.tagLocs[i]
	}
	return Loc{Path: index("tags", i)}
}

func (p *Policy) validate() Errors {
	var errs Errors
	n := p.names()

	seenTag := map[string]bool{}
	for i, t := range p.Tags {
		loc := p.tagLoc(i)
		if err := checkName(t); err != nil {
			errs.add(loc, "tag %v", err)
		} else if seenTag[t] {
			errs.add(loc, "tag %q is declared twice", t)
		}
		seenTag[t] = true
	}

	seenGroup := map[string]bool{}
	for _, g := range p.Groups {
		if err := checkName(g.Name); err != nil {
			errs.add(g.Loc, "group %v", err)
		} else if seenGroup[g.Name] {
			errs.add(g.Loc, "group %q is declared twice", g.Name)
		}
		seenGroup[g.Name] = true
		for _, m := range g.Members {
			switch m.Kind {
			case SelectTag, SelectGroup, SelectNode:
				n.checkRef(&errs, m)
			default:
				errs.add(m.Loc, "groups hold node selectors (node names, tag:NAME, group:NAME), not %s; name addresses in hosts and rules", m)
			}
		}
	}
	p.checkCycles(&errs, n)

	seenHost := map[string]bool{}
	for _, h := range p.Hosts {
		if err := checkName(h.Name); err != nil {
			errs.add(h.Loc, "host %v", err)
		} else if seenHost[h.Name] {
			errs.add(h.Loc, "host %q is declared twice", h.Name)
		}
		seenHost[h.Name] = true
		if !h.Prefix.IsValid() && !h.Loc.parsed() {
			errs.add(h.Loc, "host %q has no prefix", h.Name)
		}
	}

	ruleAt := map[string]int{}
	idAt := map[uint32]int{}
	for i := range p.Rules {
		r := &p.Rules[i]
		loc := r.Loc
		if r.nameLoc.parsed() {
			loc = r.nameLoc
		}
		if err := checkRuleName(r.Name); err != nil {
			errs.add(loc, "%v", err)
		} else if j, dup := ruleAt[r.Name]; dup {
			errs.add(loc, "rule name %q is already used by rules[%d]", r.Name, j)
		} else if j, dup := idAt[RuleID(r.Name)]; dup {
			errs.add(loc, "rule %q has the same id (%#08x) as rule %q (rules[%d]); rename one of them",
				r.Name, RuleID(r.Name), p.Rules[j].Name, j)
		} else {
			ruleAt[r.Name] = i
			idAt[RuleID(r.Name)] = i
		}
		if r.Action != Accept && r.Action != Deny {
			errs.add(r.Loc, "rule %q has an unknown action %v", r.Name, r.Action)
		}
		if r.Proto > ICMP {
			errs.add(r.Loc, "rule %q has an unknown proto %v", r.Name, r.Proto)
		}
		for side, sels := range [][]Selector{r.Src, r.Dst} {
			if len(sels) == 0 && !r.Loc.parsed() {
				errs.add(r.Loc, "rule %q has an empty %s", r.Name, [2]string{"src", "dst"}[side])
			}
			for _, s := range sels {
				n.checkRef(&errs, s)
			}
		}
		if !r.Loc.parsed() {
			if len(r.Ports) == 0 {
				errs.add(r.Loc, "rule %q has no ports (use AllPorts)", r.Name)
			}
			for _, pr := range r.Ports {
				if pr.Lo > pr.Hi {
					errs.add(r.Loc, "rule %q has a backwards port range %d-%d", r.Name, pr.Lo, pr.Hi)
				}
			}
			if r.Proto == ICMP && !r.allPorts() {
				errs.add(r.Loc, "rule %q: ICMP has no ports", r.Name)
			}
		}
	}

	for i := range p.Tests {
		n.checkTest(&errs, &p.Tests[i], func(name string) bool { _, ok := ruleAt[name]; return ok })
	}
	return errs
}

// checkTest checks a test's endpoints, protocol and port, and that the rule it
// expects exists.
func (n names) checkTest(errs *Errors, t *Test, ruleExists func(string) bool) {
	for _, s := range []Selector{t.Src, t.Dst} {
		switch {
		case s.Kind == SelectAll:
			errs.add(s.Loc, "a test endpoint is one node or address; \"*\" is not")
		case s.Kind == SelectPrefix && !s.Prefix.IsSingleIP():
			errs.add(s.Loc, "a test endpoint is one node or address; %s is a CIDR", s)
		default:
			n.checkRef(errs, s)
		}
	}
	if t.Rule != "" && !ruleExists(t.Rule) {
		errs.add(t.Loc, "test expects rule %q, which is not a rule of this policy", t.Rule)
	}
	if !t.Loc.parsed() {
		switch {
		case t.Proto == AnyProtocol || t.Proto > ICMP:
			errs.add(t.Loc, "a test's proto is tcp, udp or icmp, not %v", t.Proto)
		case t.Proto == ICMP && t.Port != 0:
			errs.add(t.Loc, "an icmp test has no port")
		case t.Proto != ICMP && t.Port == 0:
			errs.add(t.Loc, "a %v test needs a port 1..65535", t.Proto)
		}
		if t.Expect != Accept && t.Expect != Deny {
			errs.add(t.Loc, "a test expects accept or deny, not %v", t.Expect)
		}
	}
}

// checkRuleName allows any printable name of 1 to 100 characters.
func checkRuleName(name string) error {
	if name == "" {
		return fmt.Errorf("a rule name cannot be empty")
	}
	if len(name) > 100 {
		return fmt.Errorf("rule name %.20q... is longer than 100 characters", name)
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return fmt.Errorf("rule name %q has an unprintable character", name)
		}
	}
	return nil
}

// checkRef reports a tag, group or host selector naming nothing declared.
func (n names) checkRef(errs *Errors, s Selector) {
	switch s.Kind {
	case SelectTag:
		if !n.tags[s.Name] {
			errs.add(s.Loc, "unknown tag %q%s", s.Name, n.didYouMean(s.Name, 0, "tag:"))
		}
	case SelectGroup:
		if n.groups[s.Name] == nil {
			errs.add(s.Loc, "unknown group %q%s", s.Name, n.didYouMean(s.Name, 1, "group:"))
		}
	case SelectHost:
		if _, ok := n.hosts[s.Name]; !ok {
			errs.add(s.Loc, "unknown host %q%s", s.Name, n.didYouMean(s.Name, 2, "host:"))
		}
	}
}

func (n names) didYouMean(name string, kind int, prefix string) string {
	declared := n.sorted[kind]
	if *n.suggestions <= 0 {
		return ""
	}
	*n.suggestions--
	if s := suggest(name, declared); s != "" {
		return fmt.Sprintf("; did you mean %s%s?", prefix, s)
	}
	if len(declared) == 0 {
		return " (none are declared)"
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkCycles reports every group that contains itself, once per cycle, at the
// member that closes it.
func (p *Policy) checkCycles(errs *Errors, n names) {
	const (
		unseen = iota
		open
		done
	)
	state := map[string]int{}
	pos := map[string]int{} // index in stack of each open group
	var stack []string
	var visit func(g *Group)
	visit = func(g *Group) {
		state[g.Name] = open
		pos[g.Name] = len(stack)
		stack = append(stack, g.Name)
		for _, m := range g.Members {
			if m.Kind != SelectGroup || n.groups[m.Name] == nil {
				continue
			}
			switch state[m.Name] {
			case open:
				cycle := append(append([]string(nil), stack[pos[m.Name]:]...), m.Name)
				if len(cycle) > 8 {
					cycle = append(append(cycle[:4:4], fmt.Sprintf("... (%d groups)", len(cycle)-1)), m.Name)
				}
				errs.add(m.Loc, "group cycle: %s", strings.Join(cycle, " → "))
			case unseen:
				visit(n.groups[m.Name])
			}
		}
		stack = stack[:len(stack)-1]
		state[g.Name] = done
	}
	for i := range p.Groups {
		if g := n.groups[p.Groups[i].Name]; g == &p.Groups[i] && state[g.Name] == unseen {
			visit(g)
		}
	}
}
