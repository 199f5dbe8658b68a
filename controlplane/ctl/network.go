package ctl

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

func networkResource() resource[model.Network] {
	return resource[model.Network]{
		kind: "network", plural: "networks", arg: "NAME|ID",
		cols: table[model.Network]{
			{"NAME", func(n model.Network) string { return n.Name }},
			{"ID", func(n model.Network) string { return n.ID }},
			{"IPV4", func(n model.Network) string { return valid(n.IPv4) }},
			{"IPV6", func(n model.Network) string { return valid(n.IPv6) }},
			{"MTU", func(n model.Network) string { return itoa(n.MTU) }},
			{"DESCRIPTION", func(n model.Network) string { return dash(n.Description) }},
		},
		list: (*apiclient.Client).ListNetworks,
		get:  (*apiclient.Client).GetNetwork,
		del:  (*apiclient.Client).DeleteNetwork,
		ref:  func(n model.Network) string { return n.Name },
		hint: func(n model.Network) string { return n.IPv4.String() },
	}
}

func (a *app) networkCmd() *cobra.Command {
	r := networkResource()

	var req apiv1.CreateNetwork
	create := &cobra.Command{
		Use:   "create NAME --ipv4 CIDR",
		Short: "Create a network: an overlay address space of the tenant",
		Example: `  cvlanctl -t acme network create office --ipv4 100.64.0.0/24
  cvlanctl -t acme network create lab --ipv4 100.64.1.0/24 --ipv6 fd7a:115c:a1e0::/64 --mtu 1380`,
		Args: oneArg("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.Network, error) {
				return c.CreateNetwork(ctx, tenant, req)
			})
		},
	}
	cf := create.Flags()
	cf.StringVar(&req.IPv4, "ipv4", "", "IPv4 `CIDR` the nodes' addresses come from (required)")
	cf.StringVar(&req.IPv6, "ipv6", "", "IPv6 unique local (fc00::/7) `CIDR`, optional")
	cf.IntVar(&req.MTU, "mtu", 0, "overlay MTU (default 1420)")
	cf.StringVar(&req.Description, "description", "", "free text")
	_ = create.MarkFlagRequired("ipv4")

	var name, desc string
	var mtu int
	update := &cobra.Command{
		Use:   "update NAME|ID",
		Short: "Rename a network or change its description or MTU",
		Args:  oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needSomeFlag(cmd); err != nil {
				return err
			}
			f := cmd.Flags()
			up := apiv1.UpdateNetwork{Name: changed(f, "name", name), Description: changed(f, "description", desc), MTU: changed(f, "mtu", mtu)}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.Network, error) {
				return c.UpdateNetwork(ctx, tenant, args[0], up)
			})
		},
	}
	uf := update.Flags()
	uf.StringVar(&name, "name", "", "new name")
	uf.StringVar(&desc, "description", "", "new description")
	uf.IntVar(&mtu, "mtu", 0, "new overlay MTU")

	return objectCmd(a, r, "Manage networks", create, update)
}
