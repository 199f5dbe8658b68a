package ctl

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

var tokenTable = table[model.Token]{
	{"ID", func(t model.Token) string { return t.ID }},
	{"ROLE", func(t model.Token) string { return string(t.Role) }},
	{"TENANT", func(t model.Token) string { return dash(t.TenantID) }},
	{"EXPIRES", func(t model.Token) string {
		if t.ExpiresAt.IsZero() {
			return "never"
		}
		return when(t.ExpiresAt)
	}},
	{"CREATED BY", func(t model.Token) string { return t.CreatedBy }},
	{"DESCRIPTION", func(t model.Token) string { return dash(t.Description) }},
}

func tokenResource() resource[model.Token] {
	return resource[model.Token]{
		kind: "token", plural: "API tokens", arg: "ID", global: true,
		cols: tokenTable,
		list: globalList((*apiclient.Client).ListTokens),
		get:  globalGet((*apiclient.Client).GetToken),
		del:  globalDel((*apiclient.Client).DeleteToken),
		ref:  func(t model.Token) string { return t.ID },
		hint: func(t model.Token) string { return string(t.Role) + " " + t.Description },
	}
}

func roles() []string {
	s := make([]string, len(model.Roles))
	for i, r := range model.Roles {
		s[i] = string(r)
	}
	return s
}

func (a *app) tokenCmd() *cobra.Command {
	r := tokenResource()

	var req apiv1.CreateToken
	var exp string
	create := &cobra.Command{
		Use:   "create --role ROLE",
		Short: "Create an API token; its secret is printed once",
		Long: `Create an API token; its secret is printed once.

Roles: operator (everything, every tenant), tenant-admin (read and write one
tenant), tenant-viewer (read one tenant). The tenant roles take the tenant from
--tenant, $CVLAN_TENANT or the login config; operator tokens have none.
Without --expiry the token never expires.`,
		Example: `  cvlanctl token create --role tenant-admin --tenant acme --expiry 720h --description "acme CI"`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.settings()
			if err != nil {
				return err
			}
			c, err := s.client()
			if err != nil {
				return err
			}
			// An operator token is scoped to no tenant: only an explicit --tenant is
			// sent (for the server to refuse), never the default one.
			req.Tenant = s.Tenant
			if model.Role(req.Role) == model.RoleOperator {
				req.Tenant = a.tenantFlag
			}
			req.ExpiresIn, req.ExpiresAt = expiry(exp)
			t, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			return showSecret(a, tokenTable, t, t.Token, t.Secret)
		},
	}
	cf := create.Flags()
	cf.StringVar(&req.Role, "role", "", "`role`: operator, tenant-admin or tenant-viewer (required)")
	cf.StringVar(&exp, "expiry", "", "how long the token is valid: "+expiryUsage+" (default never)")
	cf.StringVar(&req.Description, "description", "", "free text")
	_ = create.MarkFlagRequired("role")
	_ = create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(roles(), cobra.ShellCompDirectiveNoFileComp))

	var desc string
	update := &cobra.Command{
		Use:   "update ID --description TEXT",
		Short: "Change an API token's description",
		Args:  oneArg("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, _ string) (model.Token, error) {
				return c.UpdateToken(ctx, args[0], apiv1.UpdateToken{Description: &desc})
			})
		},
	}
	update.Flags().StringVar(&desc, "description", "", "new description (required)")
	_ = update.MarkFlagRequired("description")

	return objectCmd(a, r, "Manage API tokens", create, update)
}
