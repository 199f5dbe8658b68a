package ctl

import (
	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

var auditTable = table[model.AuditEntry]{
	{"AT", func(e model.AuditEntry) string { return when(e.At) }},
	{"ACTOR", func(e model.AuditEntry) string { return e.Actor }},
	{"TENANT", func(e model.AuditEntry) string { return dash(e.TenantID) }},
	{"ACTION", func(e model.AuditEntry) string { return e.Action }},
	{"KIND", func(e model.AuditEntry) string { return e.Kind }},
	{"OBJECT", func(e model.AuditEntry) string { return e.ObjectID }},
	{"DETAIL", func(e model.AuditEntry) string { return dash(e.Detail) }},
}

func (a *app) auditCmd() *cobra.Command {
	var everyTenant bool
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log, newest first: who changed what, when",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("--limit: must not be negative")
			}
			var c *apiclient.Client
			var tenant string
			var err error
			if everyTenant {
				c, _, err = a.client()
			} else {
				c, tenant, err = a.tenantClient()
			}
			if err != nil {
				return err
			}
			entries := []model.AuditEntry{}
			o := apiclient.AuditOptions{}
			for {
				o.Limit = apiv1.MaxLimit
				if limit > 0 {
					o.Limit = min(apiv1.MaxLimit, limit-len(entries))
				}
				var page apiv1.List[model.AuditEntry]
				if everyTenant {
					page, err = c.Audit(cmd.Context(), o)
				} else {
					page, err = c.TenantAudit(cmd.Context(), tenant, o)
				}
				if err != nil {
					return err
				}
				entries = append(entries, page.Items...)
				if page.Next == "" || page.Next == o.Before || (limit > 0 && len(entries) >= limit) {
					break
				}
				o.Before = page.Next
			}
			if limit > 0 && len(entries) > limit {
				entries = entries[:limit]
			}
			return showList(a, auditTable, entries)
		},
	}
	cmd.Flags().BoolVar(&everyTenant, "all", false, "every tenant's entries (operators only)")
	cmd.Flags().IntVar(&limit, "limit", 100, "show at most `N` entries (0: all)")
	return cmd
}
