package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
)

// resource describes one kind of object to the plumbing every kind shares: list,
// get, delete, printing, create/update calls and shell completion. Each object's
// file builds one and adds its own create and update commands.
type resource[T any] struct {
	kind   string // "network": command name and what messages call it
	plural string // "networks"
	arg    string // how the reference argument reads in usage: "NAME|ID" or "ID"
	global bool   // not inside a tenant (tenants, tokens, relays)
	cols   table[T]

	list func(c *apiclient.Client, ctx context.Context, tenant string, o apiclient.ListOptions) (apiv1.List[T], error)
	get  func(c *apiclient.Client, ctx context.Context, tenant, ref string) (T, error)
	del  func(c *apiclient.Client, ctx context.Context, tenant, ref string) error

	// ref is what completion offers for an object (its name, or its id for keys and
	// tokens); hint, when set, is shown beside it.
	ref  func(T) string
	hint func(T) string
}

// Adapters from the client's methods on objects outside tenants (tenants, tokens,
// relays) to the tenant-taking shape of resource; the tenant is ignored.

func globalList[T any](f func(*apiclient.Client, context.Context, apiclient.ListOptions) (apiv1.List[T], error)) func(*apiclient.Client, context.Context, string, apiclient.ListOptions) (apiv1.List[T], error) {
	return func(c *apiclient.Client, ctx context.Context, _ string, o apiclient.ListOptions) (apiv1.List[T], error) {
		return f(c, ctx, o)
	}
}

func globalGet[T any](f func(*apiclient.Client, context.Context, string) (T, error)) func(*apiclient.Client, context.Context, string, string) (T, error) {
	return func(c *apiclient.Client, ctx context.Context, _, ref string) (T, error) { return f(c, ctx, ref) }
}

func globalDel(f func(*apiclient.Client, context.Context, string) error) func(*apiclient.Client, context.Context, string, string) error {
	return func(c *apiclient.Client, ctx context.Context, _, ref string) error { return f(c, ctx, ref) }
}

// scope returns a client and, for tenant-scoped kinds, the tenant.
func (a *app) scope(global bool) (*apiclient.Client, string, error) {
	if global {
		c, _, err := a.client()
		return c, "", err
	}
	return a.tenantClient()
}

// call runs fn with a client in r's scope and prints the object it returns: the
// body of every create and update command.
func call[T any](a *app, r resource[T], cmd *cobra.Command, fn func(ctx context.Context, c *apiclient.Client, tenant string) (T, error)) error {
	c, tenant, err := a.scope(r.global)
	if err != nil {
		return err
	}
	v, err := fn(cmd.Context(), c, tenant)
	if err != nil {
		return err
	}
	return showOne(a, r.cols, v)
}

// all fetches every page of r's list.
func all[T any](ctx context.Context, r resource[T], c *apiclient.Client, tenant string) ([]T, error) {
	return apiclient.All(ctx, func(ctx context.Context, o apiclient.ListOptions) (apiv1.List[T], error) {
		return r.list(c, ctx, tenant, o)
	})
}

func listCmd[T any](a *app, r resource[T]) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List " + r.plural,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, tenant, err := a.scope(r.global)
			if err != nil {
				return err
			}
			items, err := all(cmd.Context(), r, c, tenant)
			if err != nil {
				return err
			}
			return showList(a, r.cols, items)
		},
	}
}

func getCmd[T any](a *app, r resource[T]) *cobra.Command {
	return &cobra.Command{
		Use:               "get " + r.arg,
		Short:             "Show one " + r.kind,
		Args:              oneArg(r.arg),
		ValidArgsFunction: completeArg(a, r),
		RunE: func(cmd *cobra.Command, args []string) error {
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (T, error) {
				return r.get(c, ctx, tenant, args[0])
			})
		},
	}
}

func deleteCmd[T any](a *app, r resource[T]) *cobra.Command {
	return &cobra.Command{
		Use:               "delete " + r.arg,
		Aliases:           []string{"rm"},
		Short:             "Delete a " + r.kind,
		Args:              oneArg(r.arg),
		ValidArgsFunction: completeArg(a, r),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, tenant, err := a.scope(r.global)
			if err != nil {
				return err
			}
			if err := r.del(c, cmd.Context(), tenant, args[0]); err != nil {
				return err
			}
			if a.output == outputTable {
				fmt.Fprintf(a.stdout, "%s %s deleted\n", r.kind, args[0])
			}
			return nil
		},
	}
}

// objectCmd is the group command of one kind: its create and update commands
// (built by the kind's file), the shared list, get and delete, and any extra
// commands of the kind that take one object argument.
func objectCmd[T any](a *app, r resource[T], short string, create, update *cobra.Command, extra ...*cobra.Command) *cobra.Command {
	subs := []*cobra.Command{create, listCmd(a, r), getCmd(a, r)}
	if update != nil {
		update.ValidArgsFunction = completeArg(a, r)
		subs = append(subs, update)
	}
	subs = append(subs, deleteCmd(a, r))
	for _, c := range extra {
		c.ValidArgsFunction = completeArg(a, r)
		subs = append(subs, c)
	}
	return group(r.kind, short, subs...)
}

// Completion. Failures complete nothing and print nothing: the shell is waiting.

const completeTimeout = 5 * time.Second

// complete lists the references of r's objects that start with prefix.
func complete[T any](a *app, r resource[T], prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	const dir = cobra.ShellCompDirectiveNoFileComp
	s, err := a.settings()
	if err != nil || (!r.global && s.Tenant == "") {
		return nil, dir
	}
	c, err := s.client()
	if err != nil {
		return nil, dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), completeTimeout)
	defer cancel()
	page, err := r.list(c, ctx, s.Tenant, apiclient.ListOptions{Limit: apiv1.MaxLimit})
	if err != nil {
		return nil, dir
	}
	var out []cobra.Completion
	for _, v := range page.Items {
		ref := r.ref(v)
		if !strings.HasPrefix(ref, prefix) {
			continue
		}
		if r.hint != nil && r.hint(v) != "" {
			ref = cobra.CompletionWithDesc(ref, r.hint(v))
		}
		out = append(out, ref)
	}
	return out, dir
}

// completeArg completes the first positional argument with r's references.
func completeArg[T any](a *app, r resource[T]) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return complete(a, r, prefix)
	}
}

// completeFlag completes a flag's value with r's references.
func completeFlag[T any](a *app, r resource[T]) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return complete(a, r, prefix)
	}
}
