package policy

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Dump writes the whole compiled policy as text, for people and golden files: the
// identity classes with the rule sides selecting them, then each node's peers,
// prefixes and rule entries, everything sorted.
func (c *Compiled) Dump(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "version %d\n", c.version)
	fmt.Fprintf(bw, "identities:\n")
	for id := range c.classes {
		cl := &c.classes[id]
		sel := make([]string, len(cl.sides))
		for i, s := range cl.sides {
			sel[i] = c.rules[s>>1].name + [2]string{".src", ".dst"}[s&1]
		}
		desc := strings.Join(sel, " ")
		if desc == "" {
			desc = "(no rule selects it but by \"*\")"
		}
		fmt.Fprintf(bw, "  %d ipv%d: %s\n", ident(int32(id)), 4+2*int(cl.family), desc)
	}
	for i := range c.nodes {
		nd := &c.nodes[i]
		v := c.view(int32(i))
		np := c.nodePolicy(v)
		fmt.Fprintf(bw, "node %s", nd.label())
		if len(nd.Tags) > 0 {
			fmt.Fprintf(bw, " tags %s", strings.Join(nd.Tags, ","))
		}
		for _, a := range nd.Addrs {
			fmt.Fprintf(bw, " %s", a)
		}
		for _, r := range nd.Routes {
			fmt.Fprintf(bw, " route %s", r)
		}
		fmt.Fprintf(bw, "\n  peers: %s\n", strings.Join(c.peers(v), " "))
		for _, p := range np.Prefixes {
			fmt.Fprintf(bw, "  prefix %s -> %d\n", p.Prefix, p.Identity)
		}
		for _, e := range np.Rules {
			fmt.Fprintf(bw, "  %s\n", formatEntry(e, np.RuleNames))
		}
	}
	return bw.Flush()
}

func formatEntry(e RuleEntry, names map[uint32]string) string {
	id := fmt.Sprint(e.Identity)
	if e.Identity == IdentityAny {
		id = "any"
	}
	ports := PortRange{e.PortLo, e.PortHi}.String()
	if e.Proto == ProtoICMP || e.Proto == ProtoICMPv6 {
		ports = "-"
	}
	return fmt.Sprintf("%-7s %-4s %-6s %-11s %-6s %s (%#08x)", e.Direction, id, ProtoName(e.Proto), ports, e.Verdict,
		names[e.RuleID], e.RuleID)
}
