package ctl

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

func siteResource() resource[model.IPsecSite] {
	return resource[model.IPsecSite]{
		kind: "site", plural: "IPsec sites", arg: "NAME|ID",
		cols: table[model.IPsecSite]{
			{"NAME", func(s model.IPsecSite) string { return s.Name }},
			{"ID", func(s model.IPsecSite) string { return s.ID }},
			{"VROUTER", func(s model.IPsecSite) string { return s.VRouterNodeID }},
			{"REMOTE ADDR", func(s model.IPsecSite) string { return s.RemoteAddr }},
			{"AUTH", func(s model.IPsecSite) string { return s.AuthMethod }},
			{"LOCAL SUBNETS", func(s model.IPsecSite) string { return prefixes(s.LocalSubnets) }},
			{"REMOTE SUBNETS", func(s model.IPsecSite) string { return prefixes(s.RemoteSubnets) }},
		},
		list: (*apiclient.Client).ListSites,
		get:  (*apiclient.Client).GetSite,
		del:  (*apiclient.Client).DeleteSite,
		ref:  func(s model.IPsecSite) string { return s.Name },
		hint: func(s model.IPsecSite) string { return s.RemoteAddr },
	}
}

// siteFlags are the flags of site create and update; files are read at run time.
type siteFlags struct {
	body          apiv1.Site
	pskFile, cert string
}

func (s *siteFlags) bind(cmd *cobra.Command) {
	f := cmd.Flags()
	b := &s.body
	f.StringVar(&b.VRouterNode, "vrouter-node", "", "the vrouter `node` (name or id) that terminates the tunnel")
	f.StringVar(&b.RemoteAddr, "remote-addr", "", "the remote peer's `address`")
	f.StringVar(&b.LocalID, "local-id", "", "IKE local `identity`")
	f.StringVar(&b.RemoteID, "remote-id", "", "IKE remote `identity`")
	f.StringVar(&b.AuthMethod, "auth-method", "", "`method`: psk or cert")
	f.StringVar(&s.pskFile, "psk-file", "", "`file` holding the pre-shared key (- for stdin); kept off the command line")
	f.StringVar(&s.cert, "certificate-file", "", "PEM certificate `file` for --auth-method cert")
	f.StringSliceVar(&b.IKEProposals, "ike-proposals", nil, "comma-separated IKE `proposals`")
	f.StringSliceVar(&b.ESPProposals, "esp-proposals", nil, "comma-separated ESP `proposals`")
	f.StringSliceVar(&b.LocalSubnets, "local-subnets", nil, "comma-separated overlay `CIDRs` offered to the site")
	f.StringSliceVar(&b.RemoteSubnets, "remote-subnets", nil, "comma-separated `CIDRs` behind the site")
	_ = cmd.RegisterFlagCompletionFunc("auth-method", cobra.FixedCompletions([]string{model.AuthPSK, model.AuthCert}, cobra.ShellCompDirectiveNoFileComp))
}

// request returns the body with the PSK and certificate read from their files.
func (s *siteFlags) request(cmd *cobra.Command) (apiv1.Site, error) {
	b := s.body
	if s.pskFile != "" {
		psk, err := readInput(cmd, s.pskFile, 64<<10)
		if err != nil {
			return b, err
		}
		b.PSK = strings.TrimRight(string(psk), "\r\n")
	}
	if s.cert != "" {
		cert, err := readInput(cmd, s.cert, 1<<20)
		if err != nil {
			return b, err
		}
		b.Certificate = string(cert)
	}
	return b, nil
}

func (a *app) siteCmd() *cobra.Command {
	r := siteResource()

	var cf siteFlags
	create := &cobra.Command{
		Use:   "create NAME --vrouter-node NODE --remote-addr ADDR ...",
		Short: "Create an IPsec site: a legacy IPsec peer terminated by a vrouter node",
		Example: `  cvlanctl -t acme site create branch --vrouter-node vr1 --remote-addr 198.51.100.4 \
    --local-id vr1.acme --remote-id branch.acme --auth-method psk --psk-file psk.txt \
    --local-subnets 100.64.0.0/24 --remote-subnets 192.168.10.0/24`,
		Args: oneArg("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := cf.request(cmd)
			if err != nil {
				return err
			}
			body.Name = args[0]
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.IPsecSite, error) {
				return c.CreateSite(ctx, tenant, body)
			})
		},
	}
	cf.bind(create)
	nodes := completeFlag(a, nodeResource(new(string)))
	_ = create.RegisterFlagCompletionFunc("vrouter-node", nodes)

	var uf siteFlags
	update := &cobra.Command{
		Use:   "update NAME|ID",
		Short: "Change an IPsec site; flags not given are left as they are",
		Args:  oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := needSomeFlag(cmd); err != nil {
				return err
			}
			body, err := uf.request(cmd)
			if err != nil {
				return err
			}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, tenant string) (model.IPsecSite, error) {
				return c.UpdateSite(ctx, tenant, args[0], body)
			})
		},
	}
	uf.bind(update)
	update.Flags().StringVar(&uf.body.Name, "name", "", "new name")
	_ = update.RegisterFlagCompletionFunc("vrouter-node", nodes)

	return objectCmd(a, r, "Manage IPsec sites", create, update)
}
