package ctl

import (
	"context"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cvlan/cvlan/controlplane/apiclient"
	"github.com/cvlan/cvlan/controlplane/apiv1"
	"github.com/cvlan/cvlan/controlplane/model"
)

func relayResource() resource[model.Relay] {
	return resource[model.Relay]{
		kind: "relay", plural: "relays", arg: "NAME|ID", global: true,
		cols: table[model.Relay]{
			{"NAME", func(r model.Relay) string { return r.Name }},
			{"ID", func(r model.Relay) string { return r.ID }},
			{"REGION", func(r model.Relay) string { return r.Region }},
			{"PUBLIC ADDR", func(r model.Relay) string { return valid(r.PublicAddr) }},
			{"UDP PORTS", func(r model.Relay) string { return itoa(r.UDPPortMin) + "-" + itoa(r.UDPPortMax) }},
			{"STUN", func(r model.Relay) string { return itoa(r.STUNPort) }},
			{"TLS URL", func(r model.Relay) string { return dash(r.TLSURL) }},
			{"WS URL", func(r model.Relay) string { return dash(r.WSURL) }},
		},
		list: globalList((*apiclient.Client).ListRelays),
		get:  globalGet((*apiclient.Client).GetRelay),
		del:  globalDel((*apiclient.Client).DeleteRelay),
		ref:  func(r model.Relay) string { return r.Name },
		hint: func(r model.Relay) string { return r.Region },
	}
}

// relayFlags binds the flags create and update share to the fields of r.
func relayFlags(f *pflag.FlagSet, r *apiv1.CreateRelay) {
	f.StringVar(&r.Region, "region", "", "`region` name, such as eu-west")
	f.StringVar(&r.PublicAddr, "public-addr", "", "public IP `address` nodes reach the relay on")
	f.Uint16Var(&r.UDPPortMin, "udp-port-min", 0, "first UDP `port` of the relay's range")
	f.Uint16Var(&r.UDPPortMax, "udp-port-max", 0, "last UDP `port` of the relay's range")
	f.Uint16Var(&r.STUNPort, "stun-port", 0, "STUN `port`")
	f.StringVar(&r.TLSURL, "tls-url", "", "https:// `URL` of the relay's TLS fallback")
	f.StringVar(&r.WSURL, "ws-url", "", "wss:// `URL` of the relay's WebSocket fallback")
	f.StringVar(&r.RelayKey, "relay-key", "", "the relay's public `key`")
}

func (a *app) relayCmd() *cobra.Command {
	r := relayResource()

	var req apiv1.CreateRelay
	create := &cobra.Command{
		Use:     "create NAME --region REGION --public-addr IP --udp-port-min N --udp-port-max N",
		Short:   "Register a relay server offered to every tenant (operators only)",
		Example: `  cvlanctl relay create fra1 --region eu-central --public-addr 203.0.113.7 --udp-port-min 40000 --udp-port-max 40999`,
		Args:    oneArg("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, _ string) (model.Relay, error) {
				return c.CreateRelay(ctx, req)
			})
		},
	}
	relayFlags(create.Flags(), &req)
	for _, name := range []string{"region", "public-addr", "udp-port-min", "udp-port-max"} {
		_ = create.MarkFlagRequired(name)
	}

	var u apiv1.CreateRelay
	update := &cobra.Command{
		Use:   "update NAME|ID",
		Short: "Change a relay's settings (operators only)",
		Args:  oneArg("NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if err := needSomeFlag(cmd); err != nil {
				return err
			}
			up := apiv1.UpdateRelay{
				Region:     changed(f, "region", u.Region),
				PublicAddr: changed(f, "public-addr", u.PublicAddr),
				UDPPortMin: changed(f, "udp-port-min", u.UDPPortMin),
				UDPPortMax: changed(f, "udp-port-max", u.UDPPortMax),
				STUNPort:   changed(f, "stun-port", u.STUNPort),
				TLSURL:     changed(f, "tls-url", u.TLSURL),
				WSURL:      changed(f, "ws-url", u.WSURL),
				RelayKey:   changed(f, "relay-key", u.RelayKey),
			}
			return call(a, r, cmd, func(ctx context.Context, c *apiclient.Client, _ string) (model.Relay, error) {
				return c.UpdateRelay(ctx, args[0], up)
			})
		},
	}
	relayFlags(update.Flags(), &u)

	return objectCmd(a, r, "Manage relay servers", create, update)
}
