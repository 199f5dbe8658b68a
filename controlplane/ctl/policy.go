package ctl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

func policyResource() resource[model.Policy] {
	return resource[model.Policy]{
		kind: "policy", plural: "policy versions, newest first",
		cols: table[model.Policy]{
			{"VERSION", func(p model.Policy) string { return itoa(p.Version) }},
			{"CREATED", func(p model.Policy) string { return when(p.CreatedAt) }},
			{"CREATED BY", func(p model.Policy) string { return p.CreatedBy }},
			{"BYTES", func(p model.Policy) string { return itoa(len(p.Document)) }},
		},
		list: (*apiclient.Client).PolicyVersions,
	}
}

// replacing is the version a write replaces: --version when given, else the
// current one (0 when the tenant has no policy yet), read just before the write.
func replacing(cmd *cobra.Command, c *apiclient.Client, tenant string, version int64) (int64, error) {
	if cmd.Flags().Changed("version") {
		return version, nil
	}
	p, err := c.GetPolicy(cmd.Context(), tenant)
	if apiclient.IsStatus(err, http.StatusNotFound) {
		return 0, nil
	}
	return p.Version, err
}

func (a *app) policyCmd() *cobra.Command {
	r := policyResource()

	var versionOnly bool
	get := &cobra.Command{
		Use:   "get",
		Short: "Print the tenant's current policy document (-o json|yaml: with its version)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, tenant, err := a.tenantClient()
			if err != nil {
				return err
			}
			p, err := c.GetPolicy(cmd.Context(), tenant)
			if err != nil {
				return err
			}
			if versionOnly {
				_, err := fmt.Fprintln(a.stdout, p.Version)
				return err
			}
			return a.emit(p, func(w io.Writer) error {
				doc := p.Document
				if doc != "" && !strings.HasSuffix(doc, "\n") {
					doc += "\n"
				}
				_, err := io.WriteString(w, doc)
				return err
			})
		},
	}
	get.Flags().BoolVar(&versionOnly, "version-only", false, "print only the current version number")

	var file string
	var version int64
	set := &cobra.Command{
		Use:   "set -f FILE|-",
		Short: "Write a new policy version from a file or stdin",
		Long: `Write a new policy version from a file, or from stdin with -f -.

The write names the version it replaces; the server refuses it if another write
came first. Without --version, set reads the current version just before writing
(last writer checks); with --version N it must still be N (read-modify-write).`,
		Example: `  cvlanctl -t acme policy get > policy.txt && $EDITOR policy.txt
  cvlanctl -t acme policy set -f policy.txt --version "$(cvlanctl -t acme policy get --version-only)"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, tenant, err := a.tenantClient()
			if err != nil {
				return err
			}
			doc, err := readInput(cmd, file, model.MaxPolicyBytes)
			if err != nil {
				return err
			}
			v, err := replacing(cmd, c, tenant, version)
			if err != nil {
				return err
			}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.Policy, error) {
				return c.PutPolicy(ctx, tenant, apiv1.PutPolicy{Document: string(doc), Version: &v})
			})
		},
	}
	set.Flags().StringVarP(&file, "file", "f", "", "policy `file`, or - for stdin (required)")
	set.Flags().Int64Var(&version, "version", 0, "the `version` this write replaces (default: the current one)")
	_ = set.MarkFlagRequired("file")

	del := &cobra.Command{
		Use:   "delete",
		Short: "Empty the tenant's policy (recorded as a new, empty version)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, tenant, err := a.tenantClient()
			if err != nil {
				return err
			}
			v, err := replacing(cmd, c, tenant, version)
			if err != nil {
				return err
			}
			if err := c.DeletePolicy(cmd.Context(), tenant, v); err != nil {
				return err
			}
			if a.output == outputTable {
				fmt.Fprintf(a.stdout, "policy of tenant %s deleted (version %s replaced)\n", tenant, strconv.FormatInt(v, 10))
			}
			return nil
		},
	}
	del.Flags().Int64Var(&version, "version", 0, "the `version` this delete replaces (default: the current one)")

	history := listCmd(a, r)
	history.Use, history.Aliases, history.Short = "history", []string{"versions"}, "List the tenant's policy versions, newest first"

	test := &cobra.Command{
		Use:   "test SRC DST PORT/PROTO",
		Short: "Ask whether SRC can reach DST, and which rule decides",
		Long: `Ask the controller whether SRC can reach DST on PORT/PROTO under the policy in
force, and which rule decides. SRC and DST are node names or ids, or addresses;
PORT/PROTO is like 443/tcp, 53/udp or icmp. Exits 0 when allowed, 1 when denied.`,
		Example: "  cvlanctl -t acme policy test web-1 db-1 5432/tcp",
		Args:    cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := policyTestRequest(args)
			if err != nil {
				return usageError{err}
			}
			c, tenant, err := a.tenantClient()
			if err != nil {
				return err
			}
			d, err := c.TestPolicy(cmd.Context(), tenant, req)
			if err != nil {
				return err
			}
			err = a.emit(d, func(w io.Writer) error {
				rule := d.Rule
				if rule == "" {
					rule = "no rule matched (default deny)"
				}
				_, err := fmt.Fprintf(w, "%s: %s -> %s %s (policy version %d, rule: %s)\n", d.Verdict, d.Src, d.Dst, args[2], d.Version, rule)
				return err
			})
			if err == nil && d.Verdict != "accept" {
				return errDenied
			}
			return err
		},
	}

	return group("policy", "Read and write the tenant's policy", get, set, del, history, test)
}

// errDenied makes `policy test` exit 1 without printing an error.
var errDenied = silentError{code: 1}

// policyTestRequest parses SRC DST PORT/PROTO.
func policyTestRequest(args []string) (apiv1.PolicyTest, error) {
	req := apiv1.PolicyTest{Src: args[0], Dst: args[1]}
	port, proto, found := strings.Cut(args[2], "/")
	switch {
	case args[2] == "icmp":
		req.Proto = "icmp"
	case !found:
		return req, fmt.Errorf("%q: want PORT/PROTO such as 443/tcp, or icmp", args[2])
	default:
		n, err := strconv.Atoi(port)
		if err != nil {
			return req, fmt.Errorf("%q: port %q is not a number", args[2], port)
		}
		req.Port, req.Proto = n, proto
	}
	return req, req.Validate()
}
