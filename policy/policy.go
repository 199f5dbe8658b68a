package policy

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"
)

// Policy is one tenant's parsed policy document. Parse builds it; a Policy built in
// Go must pass Validate (Compile calls it).
type Policy struct {
	// Version is the tenant's version of the document. Parse leaves it 0; the
	// controller sets it, and Compile copies it into every NodePolicy.
	Version int64
	// Tags are the declared tag names, without "tag:", in document order.
	Tags   []string
	Groups []Group
	Hosts  []Host
	Rules  []Rule
	Tests  []Test

	tagLocs []Loc // where each tag was declared, when parsed
}

// Group is a named set of node selectors: node names, tag:NAME and group:NAME.
type Group struct {
	Name    string
	Members []Selector
	Loc     Loc
}

// Host names a prefix (a bare IP in the document is a /32 or /128).
type Host struct {
	Name   string
	Prefix netip.Prefix
	Loc    Loc
}

// Rule lets (Accept) or forbids (Deny) traffic from Src to Dst on Proto and Ports.
// Deny rules override accept rules; anything no accept rule lets through is denied.
type Rule struct {
	// Name is unique in the document; the rule's stable id is RuleID(Name).
	Name   string
	Action Verdict
	Src    []Selector
	Dst    []Selector
	// Ports are the destination ports, sorted; AllPorts when the document says "*"
	// or nothing. A rule with specific ports matches TCP and UDP only.
	Ports []PortRange
	Proto Protocol
	Loc   Loc

	nameLoc Loc    // where the name was written, when it was
	sideLoc [2]Loc // where src and dst were written
}

// AllPorts is the port range of "*": every port, 0 included.
var AllPorts = PortRange{Lo: 0, Hi: 65535}

// allPorts reports whether the rule's ports are "*", which is what lets a rule
// with proto any also match ICMP.
func (r *Rule) allPorts() bool {
	return len(r.Ports) == 1 && r.Ports[0] == AllPorts
}

// Covers reports whether the rule matches IP protocol proto on destination port
// port (the port is ignored for ICMP and ICMPv6).
func (r *Rule) Covers(proto uint8, port uint16) bool {
	switch proto {
	case ProtoTCP, ProtoUDP:
		if !r.Proto.covers(proto) {
			return false
		}
		for _, pr := range r.Ports {
			if pr.Lo <= port && port <= pr.Hi {
				return true
			}
		}
		return false
	case ProtoICMP, ProtoICMPv6:
		return r.Proto.covers(proto) && r.allPorts()
	}
	return false
}

// RuleID is the stable id of a rule named name: its 32-bit FNV-1a hash. Ids
// survive recompiles and edits of other rules, so per-rule counters keep their
// meaning; two names of one document with the same id are an error.
func RuleID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	switch {
	case r == AllPorts:
		return "*"
	case r.Lo == r.Hi:
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Protocol is a rule's or test's protocol.
type Protocol uint8

const (
	// AnyProtocol is TCP, UDP, ICMP and ICMPv6; other IP protocols are always denied.
	AnyProtocol Protocol = iota
	TCP
	UDP
	// ICMP is ICMP for IPv4 and ICMPv6 for IPv6.
	ICMP
)

var protocolNames = [...]string{AnyProtocol: "any", TCP: "tcp", UDP: "udp", ICMP: "icmp"}

func (p Protocol) String() string {
	if int(p) < len(protocolNames) {
		return protocolNames[p]
	}
	return "Protocol(" + strconv.Itoa(int(p)) + ")"
}

// Numbers are the IP protocol numbers p stands for, ascending.
func (p Protocol) Numbers() []uint8 {
	switch p {
	case TCP:
		return []uint8{ProtoTCP}
	case UDP:
		return []uint8{ProtoUDP}
	case ICMP:
		return []uint8{ProtoICMP, ProtoICMPv6}
	}
	return []uint8{ProtoICMP, ProtoTCP, ProtoUDP, ProtoICMPv6}
}

func (p Protocol) covers(n uint8) bool {
	for _, m := range p.Numbers() {
		if m == n {
			return true
		}
	}
	return false
}

// ProtoName names an IP protocol number: tcp, udp, icmp, icmpv6 or the number.
func ProtoName(n uint8) string {
	switch n {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(n))
}

// SelectorKind is what a selector names.
type SelectorKind uint8

const (
	// SelectAll is "*": every address.
	SelectAll SelectorKind = iota
	// SelectTag is tag:NAME: the overlay addresses of the nodes carrying the tag.
	SelectTag
	// SelectGroup is group:NAME: every member of the group.
	SelectGroup
	// SelectHost is host:NAME: the named host's prefix.
	SelectHost
	// SelectPrefix is a CIDR or a bare IP.
	SelectPrefix
	// SelectNode is a node name: the overlay addresses of the nodes so named.
	SelectNode
)

// Selector is one element of a rule's src or dst, a group, or a test endpoint.
// Tags, groups and node names select nodes' own overlay addresses, never the
// subnets they advertise; name those with a CIDR or host:NAME.
type Selector struct {
	Kind SelectorKind
	// Name is the tag, group, host or node name (without its kind prefix).
	Name string
	// Prefix is the CIDR of a SelectPrefix selector; Compile resolves SelectHost.
	Prefix netip.Prefix
	Loc    Loc
}

// String writes the selector as the document would.
func (s Selector) String() string {
	switch s.Kind {
	case SelectAll:
		return "*"
	case SelectTag:
		return "tag:" + s.Name
	case SelectGroup:
		return "group:" + s.Name
	case SelectHost:
		return "host:" + s.Name
	case SelectPrefix:
		if s.Prefix.IsSingleIP() {
			return s.Prefix.Addr().String()
		}
		return s.Prefix.String()
	}
	return s.Name
}

// ParseSelector parses one selector: "*", tag:NAME, group:NAME, host:NAME, a CIDR
// (with no host bits set), a bare IP, or a node name (a lowercase DNS label).
func ParseSelector(s string) (Selector, error) {
	if s == "*" {
		return Selector{Kind: SelectAll}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Selector{}, fmt.Errorf("%q is not a valid CIDR", s)
		}
		if m := p.Masked(); m != p {
			return Selector{}, fmt.Errorf("%s has host bits set; did you mean %s?", s, m)
		}
		return Selector{Kind: SelectPrefix, Prefix: p}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return Selector{}, fmt.Errorf("%q: addresses with a zone are not allowed", s)
		}
		return Selector{Kind: SelectPrefix, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if kind, name, ok := strings.Cut(s, ":"); ok && isLower(kind) {
		var k SelectorKind
		switch kind {
		case "tag":
			k = SelectTag
		case "group":
			k = SelectGroup
		case "host":
			k = SelectHost
		default:
			return Selector{}, fmt.Errorf("unknown selector kind %q in %q (want tag:, group:, host:, a CIDR, an IP or a node name)", kind+":", s)
		}
		if err := checkName(name); err != nil {
			return Selector{}, fmt.Errorf("%s: %w", s, err)
		}
		return Selector{Kind: k, Name: name}, nil
	}
	if looksLikeIP(s) {
		return Selector{}, fmt.Errorf("%q is not a valid IP address", s)
	}
	if err := checkName(s); err != nil {
		return Selector{}, fmt.Errorf("%q is not \"*\", tag:, group:, host:, a CIDR, an IP or a node name: %w", s, err)
	}
	return Selector{Kind: SelectNode, Name: s}, nil
}

// looksLikeIP reports whether s is made of digits and dots (or hex and colons),
// so that a mistyped address is not mistaken for a node name.
func looksLikeIP(s string) bool {
	if strings.Count(s, ".") == 3 {
		return strings.Trim(s, "0123456789.") == ""
	}
	return strings.Contains(s, ":")
}

func isLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'a' || s[i] > 'z' {
			return false
		}
	}
	return s != ""
}

// checkName checks a tag, group, host or node name: a lowercase DNS label of 1 to
// 63 letters, digits and inner hyphens.
func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name")
	}
	if len(name) > 63 {
		return fmt.Errorf("name %.20q... is longer than 63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(name)-1:
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("name %q has upper case; names are lowercase (%q)", name, strings.ToLower(name))
		default:
			return fmt.Errorf("name %q may hold only a-z, 0-9 and inner '-'", name)
		}
	}
	return nil
}

// ParsePorts parses one element of a rule's ports: a port 1..65535, a range
// "lo-hi" with lo <= hi, or "*".
func ParsePorts(s string) (PortRange, error) {
	if s == "*" {
		return AllPorts, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := parsePort(strings.TrimSpace(lo))
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{a, a}, nil
	}
	b, err := parsePort(strings.TrimSpace(hi))
	if err != nil {
		return PortRange{}, err
	}
	if a > b {
		return PortRange{}, fmt.Errorf("port range %q is backwards (%d > %d)", s, a, b)
	}
	return PortRange{a, b}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a port number, a range lo-hi or \"*\"", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %s is out of range 1..65535", s)
	}
	return uint16(n), nil
}

// Test is one assertion of the document, checked by Compile: a packet from Src to
// Dst on Proto and Port gets verdict Expect (decided by rule Rule, when set).
//
// tag:NAME stands for a hypothetical node carrying exactly that tag (with no
// address a CIDR could match), group:NAME for each of its members in turn, a node
// name for the nodes so named (or a hypothetical untagged node of that name), an IP
// for that address, and host:NAME for the first address of the host's prefix.
type Test struct {
	Src, Dst Selector
	Proto    Protocol // TCP, UDP or ICMP
	Port     uint16   // 0 for ICMP
	Expect   Verdict
	Rule     string
	Loc      Loc
}

// Node is what the compiler needs to know about one node of the tenant.
type Node struct {
	ID, Name string
	Tags     []string
	// Addrs are its overlay addresses.
	Addrs []netip.Addr
	// Routes are the subnets it advertises (a gateway or vrouter).
	Routes []netip.Prefix
}
