// Package ctl is cvlanctl, the operator's command line over the controller's REST
// API: login with a pinned server certificate, and create, list, get, update and
// delete for every object of docs/api.md, printed as a table, JSON or YAML.
//
// It talks to the controller only through package apiclient and shows the API's
// error messages as they are. It never touches the store or the controller's state.
// Main returns the exit code: 0 ok, 1 an API or runtime error, 2 a usage error.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/internal/version"
)

const binary = "cvlanctl"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the API refused, the server could not be reached, a file could not be read
	exitUsage = 2 // unknown command or flag, wrong arguments, bad flag value
)

// usageError marks an error found in the command line rather than at run time.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// runError marks an error returned by a command's RunE: everything else that cobra
// returns (unknown commands, flags, argument counts) is a usage error.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// silentError ends a command with an exit code and no message: the command has
// already said everything (policy test: denied).
type silentError struct{ code int }

func (e silentError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// app holds the global flags and the writers; commands read settings through it.
type app struct {
	stdout, stderr io.Writer
	configPath     string // --config
	tenantFlag     string // --tenant
	output         outputFormat
}

// Main runs cvlanctl with args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return run(ctx, args, os.Stdin, stdout, stderr)
}

// run is Main with the context and stdin given.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var se silentError
	if errors.As(err, &se) {
		return se.code
	}
	fmt.Fprintf(stderr, "%s: %s\n", binary, strings.TrimSpace(err.Error()))
	var ue usageError
	var re runError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &re):
		return exitError
	}
	return exitUsage
}

// NewRoot builds the command tree writing to stdout and stderr.
func NewRoot(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr, output: outputTable}
	root := &cobra.Command{
		Use:   binary,
		Short: "Manage a cvlan controller: tenants, networks, nodes, keys, tokens, policies",
		Long: binary + ` manages a cvlan controller over its REST API.

Start with "` + binary + ` login --server https://HOST:8443 --token TOKEN --fingerprint sha256:…"
(the controller prints its certificate fingerprint and first operator token at init).
Tenant-scoped commands take the tenant from --tenant, $CVLAN_TENANT or the login config.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "config `file` (default $CVLAN_CONFIG, else <user config dir>/cvlan/cvlanctl.yaml)")
	pf.StringVarP(&a.tenantFlag, "tenant", "t", "", "tenant `name or id` (overrides $CVLAN_TENANT and the config)")
	pf.VarP(&a.output, "output", "o", "output `format`: table, json or yaml")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("tenant", completeFlag(a, tenantResource()))

	root.AddCommand(
		a.loginCmd(), a.logoutCmd(), a.versionCmd(),
		a.tenantCmd(), a.networkCmd(), a.nodeCmd(), a.keyCmd(), a.tokenCmd(),
		a.policyCmd(), a.relayCmd(), a.siteCmd(), a.auditCmd(),
	)
	markRunErrors(root)
	return root
}

// markRunErrors wraps every RunE in the tree so that the errors it returns count as
// run-time errors (exit 1) unless they are usage errors.
func markRunErrors(c *cobra.Command) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			err := run(cmd, args)
			var ue usageError
			if err == nil || errors.As(err, &ue) {
				return err
			}
			return runError{err}
		}
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// group is a command that only holds subcommands. It prints its help when called
// alone and rejects an unknown subcommand as a usage error.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	c.AddCommand(subs...)
	return c
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of " + binary,
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(a.stdout, version.String(binary))
			return err
		},
	}
}

// Argument checks that report usage errors.

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// oneArg wants exactly one argument, described by what (e.g. "NAME").
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return usagef("%s needs %s", cmd.CommandPath(), what)
		case len(args) > 1:
			return usagef("%s takes one %s, got %d arguments", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// changed returns &v when the flag name was given on the command line, else nil:
// the pointer form PATCH bodies use for "leave as is".
func changed[T any](flags *pflag.FlagSet, name string, v T) *T {
	if !flags.Changed(name) {
		return nil
	}
	return &v
}

// needSomeFlag is the usage error of an update given none of its own flags:
// there would be nothing to change.
func needSomeFlag(cmd *cobra.Command) error {
	var names []string
	some := false
	cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" {
			return
		}
		names = append(names, "--"+f.Name)
		some = some || f.Changed
	})
	if some {
		return nil
	}
	return usagef("%s: nothing to change; pass at least one of %s", cmd.CommandPath(), strings.Join(names, ", "))
}

// readInput reads a file, or stdin for "-", refusing more than limit bytes.
func readInput(cmd *cobra.Command, path string, limit int64) ([]byte, error) {
	var r io.Reader = cmd.InOrStdin()
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return data, nil
}

// client returns an API client for the resolved settings.
func (a *app) client() (*apiclient.Client, settings, error) {
	s, err := a.settings()
	if err != nil {
		return nil, s, err
	}
	c, err := s.client()
	return c, s, err
}

// tenantClient is client for a tenant-scoped command: it also needs a tenant, and
// its absence is a usage error.
func (a *app) tenantClient() (*apiclient.Client, string, error) {
	s, err := a.settings()
	if err != nil {
		return nil, "", err
	}
	if s.Tenant == "" {
		return nil, "", usagef("no tenant: pass --tenant NAME, set CVLAN_TENANT, or log in with --tenant")
	}
	c, err := s.client()
	return c, s.Tenant, err
}
