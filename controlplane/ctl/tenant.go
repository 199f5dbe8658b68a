package ctl

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

func tenantResource() resource[model.Tenant] {
	return resource[model.Tenant]{
		kind: "tenant", plural: "tenants", arg: "NAME|ID", global: true,
		cols: table[model.Tenant]{
			{"NAME", func(t model.Tenant) string { return t.Name }},
			{"ID", func(t model.Tenant) string { return t.ID }},
			{"CREATED", func(t model.Tenant) string { return when(t.CreatedAt) }},
			{"DESCRIPTION", func(t model.Tenant) string { return dash(t.Description) }},
		},
		list: globalList((*apiclient.Client).ListTenants),
		get:  globalGet((*apiclient.Client).GetTenant),
		del:  globalDel((*apiclient.Client).DeleteTenant),
		ref:  func(t model.Tenant) string { return t.Name },
		hint: func(t model.Tenant) string { return t.Description },
	}
}

func (a *app) tenantCmd() *cobra.Command {
	r := tenantResource()

	var desc string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant (operators only)",
		Args:  oneArg("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, _ string) (model.Tenant, error) {
				return c.CreateTenant(ctx, apiv1.CreateTenant{Name: args[0], Description: desc})
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "free text")

	var name string
	update := &cobra.Command{
		Use:   "update NAME|ID",
		Short: "Rename a tenant or change its description (operators only)",
		Args:  oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needSomeFlag(cmd); err != nil {
				return err
			}
			f := cmd.Flags()
			req := apiv1.UpdateTenant{Name: changed(f, "name", name), Description: changed(f, "description", desc)}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, _ string) (model.Tenant, error) {
				return c.UpdateTenant(ctx, args[0], req)
			})
		},
	}
	update.Flags().StringVar(&name, "name", "", "new name")
	update.Flags().StringVar(&desc, "description", "", "new description")

	return objectCmd(a, r, "Manage tenants", create, update)
}
