package ctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

// nodeResource lists the nodes of *network when it is set.
func nodeResource(network *string) resource[model.Node] {
	return resource[model.Node]{
		kind: "node", plural: "nodes", arg: "NAME|ID",
		cols: table[model.Node]{
			{"NAME", func(n model.Node) string { return n.Name }},
			{"ID", func(n model.Node) string { return n.ID }},
			{"NETWORK", func(n model.Node) string { return n.NetworkID }},
			{"KIND", func(n model.Node) string { return string(n.Kind) }},
			{"IPV4", func(n model.Node) string { return valid(n.IPv4) }},
			{"IPV6", func(n model.Node) string { return valid(n.IPv6) }},
			{"TAGS", func(n model.Node) string { return list(n.Tags) }},
			{"ROUTES", func(n model.Node) string { return prefixes(n.Routes) }},
			{"LAST SEEN", func(n model.Node) string { return when(n.LastSeen) }},
		},
		list: func(c *apiclient.Client, ctx context.Context, tenant string, o apiclient.ListOptions) (apiv1.List[model.Node], error) {
			return c.ListNodes(ctx, tenant, *network, o)
		},
		get:  (*apiclient.Client).GetNode,
		del:  (*apiclient.Client).DeleteNode,
		ref:  func(n model.Node) string { return n.Name },
		hint: func(n model.Node) string { return valid(n.IPv4) },
	}
}

func (a *app) nodeCmd() *cobra.Command {
	var network string
	r := nodeResource(&network)
	nets := completeFlag(a, networkResource())

	var req apiv1.CreateNode
	create := &cobra.Command{
		Use:   "create NAME --network NETWORK",
		Short: "Register a node by hand (agents normally enroll themselves with a key)",
		Args:  oneArg("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.Node, error) {
				return c.CreateNode(ctx, tenant, req)
			})
		},
	}
	cf := create.Flags()
	cf.StringVar(&req.Network, "network", "", "`network` (name or id) the node joins (required)")
	cf.StringVar(&req.Kind, "kind", "", "node kind: agent, gateway, relay or vrouter (default agent)")
	cf.StringSliceVar(&req.Tags, "tags", nil, "comma-separated `tags`")
	cf.StringVar(&req.MachineKey, "machine-key", "", "the node's machine (Noise) public `key`")
	cf.StringVar(&req.NodeKey, "node-key", "", "the node's WireGuard public `key`")
	cf.StringSliceVar(&req.Routes, "routes", nil, "comma-separated `CIDRs` the node routes to")
	_ = create.MarkFlagRequired("network")
	_ = create.RegisterFlagCompletionFunc("network", nets)
	_ = create.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions(kinds(), cobra.ShellCompDirectiveNoFileComp))

	var name string
	var tags, routes []string
	update := &cobra.Command{
		Use:   "update NAME|ID",
		Short: "Rename a node or replace its tags or routes",
		Args:  oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needSomeFlag(cmd); err != nil {
				return err
			}
			f := cmd.Flags()
			up := apiv1.UpdateNode{Name: changed(f, "name", name), Tags: changed(f, "tags", tags), Routes: changed(f, "routes", routes)}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.Node, error) {
				return c.UpdateNode(ctx, tenant, args[0], up)
			})
		},
	}
	uf := update.Flags()
	uf.StringVar(&name, "name", "", "new name")
	uf.StringSliceVar(&tags, "tags", nil, "new comma-separated `tags` (\"\" clears them)")
	uf.StringSliceVar(&routes, "routes", nil, "new comma-separated `CIDRs` (\"\" clears them)")

	rotate := &cobra.Command{
		Use:   "rotate-key NAME|ID",
		Short: "Ask a node's agent for a new WireGuard key; its peers switch to it",
		Long: "rotate-key asks the node's agent to make a new WireGuard key pair and report the\n" +
			"public key; the controller then gives it to every peer in place of the old one.\n" +
			"The request waits for the agent if it is offline.",
		Args: oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.Node, error) {
				return c.RotateNodeKey(ctx, tenant, args[0])
			})
		},
	}

	status := &cobra.Command{
		Use:   "status NAME|ID",
		Short: "Show whether a node's agent is connected, and its per-rule policy counters",
		Args:  oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, tenant, err := a.tenantClient()
			if err != nil {
				return err
			}
			st, err := c.NodeStatus(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			return a.emit(st, func(w io.Writer) error { return writeNodeStatus(w, args[0], st) })
		},
	}

	cmd := objectCmd(a, r, "Manage nodes", create, update, rotate, status)
	for _, sub := range cmd.Commands() {
		if sub.Name() == "list" {
			sub.Flags().StringVar(&network, "network", "", "list only this `network`'s nodes")
			_ = sub.RegisterFlagCompletionFunc("network", nets)
		}
	}
	return cmd
}

func kinds() []string {
	s := make([]string, len(model.NodeKinds))
	for i, k := range model.NodeKinds {
		s[i] = string(k)
	}
	return s
}

func writeNodeStatus(w io.Writer, name string, st apiv1.NodeStatus) error {
	conn := "not connected"
	if st.Connected {
		conn = "connected"
	}
	fmt.Fprintf(w, "node %s (%s): agent %s", name, st.NodeID, conn)
	if !st.ReportedAt.IsZero() {
		fmt.Fprintf(w, ", counters reported %s", when(st.ReportedAt))
	}
	fmt.Fprintln(w)
	t := table[apiv1.RuleCounter]{
		{"RULE", func(r apiv1.RuleCounter) string { return r.Name }},
		{"ID", func(r apiv1.RuleCounter) string { return strconv.FormatUint(uint64(r.ID), 10) }},
		{"PACKETS", func(r apiv1.RuleCounter) string { return strconv.FormatUint(r.Packets, 10) }},
		{"BYTES", func(r apiv1.RuleCounter) string { return strconv.FormatUint(r.Bytes, 10) }},
	}
	if err := t.write(w, st.Rules); err != nil {
		return err
	}
	reasons := make([]string, 0, len(st.Drops))
	for k := range st.Drops {
		reasons = append(reasons, k)
	}
	slices.Sort(reasons)
	for _, k := range reasons {
		fmt.Fprintf(w, "dropped (%s): %d\n", k, st.Drops[k])
	}
	return nil
}
