package ctl

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
)

// loginFlags are login's own flags.
type loginFlags struct {
	server, token string
	fingerprint   string
	caFile        string
	tofu          bool
}

func (a *app) loginCmd() *cobra.Command {
	var f loginFlags
	cmd := &cobra.Command{
		Use:   "login --server URL --token TOKEN [--fingerprint sha256:HEX | --ca-file FILE | --insecure-trust-on-first-use]",
		Short: "Check a controller and a token, then save them for the other commands",
		Long: `Check that the controller answers and accepts the token, then save the server,
the token, how to trust the server, and the default tenant (--tenant) to the
config file, readable by you only (0600).

The controller's certificate is self-signed unless its operator gave it one:
pin it with --fingerprint, the sha256 fingerprint "cvlan-controller init"
printed, as you would check an SSH host key. Once pinned, any other certificate
is refused. --ca-file trusts a CA instead; with neither, the system roots are
used. --insecure-trust-on-first-use pins whatever certificate the server shows
now and prints its fingerprint: compare it with the controller's before relying
on it.

--token - reads the token from stdin; the server and token may also come from
$CVLAN_SERVER and $CVLAN_TOKEN.`,
		Example: `  cvlanctl login --server https://ctl.example:8443 --token "$TOKEN" \
    --fingerprint sha256:3f5c…e1 --tenant acme`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.login(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "", "controller `URL`, https://HOST:PORT (default $CVLAN_SERVER)")
	fl.StringVar(&f.token, "token", "", "API token `secret`, or - to read it from stdin (default $CVLAN_TOKEN)")
	fl.StringVar(&f.fingerprint, "fingerprint", "", "pin the server certificate: `sha256:HEX` of its DER")
	fl.StringVar(&f.caFile, "ca-file", "", "trust the server through this PEM CA `file`")
	fl.BoolVar(&f.tofu, "insecure-trust-on-first-use", false, "pin the certificate the server presents now (check the printed fingerprint)")
	cmd.MarkFlagsMutuallyExclusive("fingerprint", "ca-file", "insecure-trust-on-first-use")
	return cmd
}

func (a *app) login(cmd *cobra.Command, f loginFlags) error {
	ctx := cmd.Context()
	path, err := a.configFile()
	if err != nil {
		return err
	}
	cfg := fileConfig{Server: f.server, Token: f.token, Fingerprint: f.fingerprint, Tenant: a.tenantFlag}
	if cfg.Server == "" {
		cfg.Server = os.Getenv("CVLAN_SERVER")
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("CVLAN_TOKEN")
	}
	if cfg.Token == "-" {
		data, err := readInput(cmd, "-", 4096)
		if err != nil {
			return err
		}
		cfg.Token = strings.TrimSpace(string(data))
	}
	switch {
	case cfg.Server == "":
		return usagef("login needs --server URL (or $CVLAN_SERVER)")
	case cfg.Token == "":
		return usagef("login needs --token TOKEN (or $CVLAN_TOKEN)")
	}
	if f.caFile != "" {
		if cfg.CAFile, err = filepath.Abs(f.caFile); err != nil {
			return err
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{fmt.Errorf("--%w", err)}
	}
	if f.tofu {
		fp, err := apiclient.FetchFingerprint(ctx, cfg.Server)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "Trusting the certificate %s presents on first use:\n  %s\n"+
			"Compare it with the fingerprint the controller printed; it is pinned from now on.\n", cfg.Server, fp)
		cfg.Fingerprint = fp
	}

	c, err := apiclient.New(apiclient.Config{Server: cfg.Server, Token: cfg.Token, Fingerprint: cfg.Fingerprint, CAFile: cfg.CAFile})
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return a.untrusted(cmd, cfg, err)
	}
	if _, err := c.ListTenants(ctx, apiclient.ListOptions{Limit: 1}); err != nil {
		return err
	}
	if cfg.Tenant != "" {
		if _, err := c.GetTenant(ctx, cfg.Tenant); err != nil {
			return err
		}
	}
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Logged in to %s (controller %s); saved to %s\n", cfg.Server, info.Version, path)
	return nil
}

// untrusted adds what to do to a certificate verification failure: the system
// roots or the CA file do not know the server's certificate, which is the normal
// case for the controller's self-signed one.
func (a *app) untrusted(cmd *cobra.Command, cfg fileConfig, err error) error {
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		return err
	}
	fp, ferr := apiclient.FetchFingerprint(cmd.Context(), cfg.Server)
	if ferr != nil {
		return err
	}
	return fmt.Errorf("%w\nThe server presents the certificate %s. If that is the fingerprint the controller printed, "+
		"log in again with --fingerprint %s", err, fp, fp)
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Remove the saved config, token included",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			path, err := a.configFile()
			if err != nil {
				return err
			}
			switch err := os.Remove(path); {
			case errors.Is(err, fs.ErrNotExist):
				fmt.Fprintf(a.stdout, "Not logged in (no %s)\n", path)
			case err != nil:
				return err
			default:
				fmt.Fprintf(a.stdout, "Removed %s\n", path)
			}
			return nil
		},
	}
}
