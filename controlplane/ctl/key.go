package ctl

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

var keyTable = table[model.EnrollmentKey]{
	{"ID", func(k model.EnrollmentKey) string { return k.ID }},
	{"NETWORK", func(k model.EnrollmentKey) string { return k.NetworkID }},
	{"TAGS", func(k model.EnrollmentKey) string { return list(k.Tags) }},
	{"REUSABLE", func(k model.EnrollmentKey) string { return yesNo(k.Reusable) }},
	{"USES", func(k model.EnrollmentKey) string { return uses(k) }},
	{"EPHEMERAL", func(k model.EnrollmentKey) string { return yesNo(k.Ephemeral) }},
	{"EXPIRES", func(k model.EnrollmentKey) string { return when(k.ExpiresAt) }},
	{"DESCRIPTION", func(k model.EnrollmentKey) string { return dash(k.Description) }},
}

func uses(k model.EnrollmentKey) string {
	if k.MaxUses == 0 {
		return itoa(k.Uses) + "/unlimited"
	}
	return itoa(k.Uses) + "/" + itoa(k.MaxUses)
}

func keyResource() resource[model.EnrollmentKey] {
	return resource[model.EnrollmentKey]{
		kind: "key", plural: "enrollment keys", arg: "ID",
		cols: keyTable,
		list: (*apiclient.Client).ListKeys,
		get:  (*apiclient.Client).GetKey,
		del:  (*apiclient.Client).DeleteKey,
		ref:  func(k model.EnrollmentKey) string { return k.ID },
		hint: func(k model.EnrollmentKey) string { return k.Description },
	}
}

// expiry splits an --expiry value into the API's two forms: an RFC 3339 time is an
// absolute expiry, anything else a duration the server parses ("24h").
func expiry(s string) (in, at string) {
	if _, err := time.Parse(time.RFC3339, s); err == nil {
		return "", s
	}
	return s, ""
}

const expiryUsage = "`duration` such as 24h, or an RFC 3339 time"

// createdKey is what key create prints with -o json/yaml: the key, its secret
// (shown this once) and the command that joins a machine with it.
type createdKey struct {
	apiv1.CreatedEnrollmentKey
	JoinCommand string `json:"join_command"`
}

func (a *app) keyCmd() *cobra.Command {
	r := keyResource()

	var req apiv1.CreateEnrollmentKey
	var exp string
	create := &cobra.Command{
		Use:   "create --network NETWORK",
		Short: "Create an enrollment key; its secret is printed once with the agent's join command",
		Example: `  cvlanctl -t acme key create --network office --tags laptop --expiry 1h
  cvlanctl -t acme key create --network office --reusable --max-uses 10 --ephemeral`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, tenant, err := a.tenantClient()
			if err != nil {
				return err
			}
			// The join command needs the controller's Noise key: ask first, so that a
			// failure here leaves no key whose secret was never shown.
			info, err := c.Info(cmd.Context())
			if err != nil {
				return err
			}
			req.ExpiresIn, req.ExpiresAt = expiry(exp)
			k, err := c.CreateKey(cmd.Context(), tenant, req)
			if err != nil {
				return err
			}
			out := createdKey{CreatedEnrollmentKey: k, JoinCommand: fmt.Sprintf(
				"cvlan-agent up --controller %s --controller-key %s --enroll-key %s",
				c.Server(), info.NoisePublicKey, k.Secret)}
			return showSecret(a, keyTable, out, k.EnrollmentKey, k.Secret, "\nJoin a machine with:\n  "+out.JoinCommand+"\n")
		},
	}
	cf := create.Flags()
	cf.StringVar(&req.Network, "network", "", "`network` (name or id) the key joins machines to (required)")
	cf.StringSliceVar(&req.Tags, "tags", nil, "comma-separated `tags` given to the nodes that join")
	cf.BoolVar(&req.Reusable, "reusable", false, "the key may enroll more than one machine")
	cf.IntVar(&req.MaxUses, "max-uses", 0, "with --reusable: how many machines (default unlimited)")
	cf.BoolVar(&req.Ephemeral, "ephemeral", false, "nodes that join are removed when they go away")
	cf.StringVar(&exp, "expiry", "", "how long the key is valid: "+expiryUsage+" (default 24h)")
	cf.StringVar(&req.Description, "description", "", "free text")
	_ = create.MarkFlagRequired("network")
	_ = create.RegisterFlagCompletionFunc("network", completeFlag(a, networkResource()))

	var tags []string
	var desc string
	update := &cobra.Command{
		Use:   "update ID",
		Short: "Change an enrollment key's tags, expiry or description",
		Args:  oneArg("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needSomeFlag(cmd); err != nil {
				return err
			}
			f := cmd.Flags()
			up := apiv1.UpdateEnrollmentKey{Tags: changed(f, "tags", tags), Description: changed(f, "description", desc)}
			if f.Changed("expiry") {
				in, at := expiry(exp)
				up.ExpiresIn, up.ExpiresAt = nonEmpty(in), nonEmpty(at)
			}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.EnrollmentKey, error) {
				return c.UpdateKey(ctx, tenant, args[0], up)
			})
		},
	}
	uf := update.Flags()
	uf.StringSliceVar(&tags, "tags", nil, "new comma-separated `tags` (\"\" clears them)")
	uf.StringVar(&exp, "expiry", "", "new expiry: "+expiryUsage+" from now")
	uf.StringVar(&desc, "description", "", "new description")

	return objectCmd(a, r, "Manage enrollment keys", create, update)
}

// nonEmpty is &s, or nil for "".
func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
