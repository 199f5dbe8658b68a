// Command cvlan-relay forwards WireGuard traffic between nodes that cannot reach each
// other directly: UDP sessions rewritten in XDP (with a userspace fallback), framed
// relaying over TCP/TLS and WebSocket for networks that block UDP, and a STUN server.
// `serve` runs it from a YAML file (--config), CVLAN_RELAY_* environment variables
// and flags, in increasing precedence; `key` prints the relay's public key. The
// daemon itself is datapath/relay/daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/cvlan/cvlan/datapath/relay/daemon"
	"github.com/cvlan/cvlan/internal/version"
)

const usage = `usage: cvlan-relay <command> [flags]

commands:
  serve     run the relay until SIGTERM (which drains it); --config FILE
  key       print the relay's public key (relaykey:...), creating the key in
            --data-dir on first use, for 'cvlanctl relay create --relay-key'
  version   print the version

serve flags (also CVLAN_RELAY_<FLAG> environment variables, e.g.
CVLAN_RELAY_STUN_LISTEN, and the keys of the YAML --config file; flags win over
the environment, which wins over the file):
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		fs, _, _ := serveFlags(stdout)
		fs.PrintDefaults()
		return 0
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		fmt.Fprintln(stdout, version.String("cvlan-relay"))
		return 0
	case "key":
		return keyCmd(args, stdout, stderr)
	case "serve":
		return serve(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "cvlan-relay: unknown command %q\n%s", cmd, usage)
	return 2
}

// keyCmd prints the relay key, creating it if needed.
func keyCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cvlan-relay key", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", daemon.DefaultDataDir, "data directory holding relay.key ($CVLAN_RELAY_DATA_DIR)")
	if v := os.Getenv("CVLAN_RELAY_DATA_DIR"); v != "" {
		*dir = v
	}
	fs.Usage = func() {
		fmt.Fprint(stdout, "usage: cvlan-relay key [--data-dir DIR]\n\n")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cvlan-relay key: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	priv, created, err := daemon.LoadOrCreateKey(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "cvlan-relay key: %v\n", err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "cvlan-relay key: created %s/%s\n", *dir, daemon.KeyFile)
	}
	fmt.Fprintln(stdout, daemon.RelayPublic(priv))
	return 0
}

// serveFlags declares serve's flags; set records the flags given, in order, as
// setting index and raw value.
func serveFlags(out io.Writer) (fs *flag.FlagSet, configPath *string, set *[]flagValue) {
	fs = flag.NewFlagSet("cvlan-relay serve", flag.ContinueOnError)
	fs.SetOutput(out)
	configPath = fs.String("config", "", "YAML configuration file")
	set = new([]flagValue)
	def := daemon.DefaultConfig()
	for i, s := range def.Settings() {
		u := s.Usage
		if d := s.Get(); d != "" {
			u += " (default " + d + ")"
		}
		if s.List {
			u += ", comma-separated"
		}
		fs.Func(s.Flag, u+" ($"+s.Env+"; YAML "+s.Name+")", func(v string) error {
			// Parse now for early errors; applied after the file and environment.
			scratch := daemon.DefaultConfig()
			if err := scratch.Settings()[i].Set(v); err != nil {
				return err
			}
			*set = append(*set, flagValue{i, v})
			return nil
		})
	}
	return fs, configPath, set
}

type flagValue struct {
	setting int
	value   string
}

// serve layers defaults, file, environment and flags, then runs the daemon.
func serve(args []string, stdout, stderr io.Writer) int {
	fs, path, set := serveFlags(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, usage); fs.SetOutput(stdout); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cvlan-relay serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := config(*path, *set)
	if err != nil {
		fmt.Fprintf(stderr, "cvlan-relay serve: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg, daemon.NewLogger(cfg, stderr), nil); err != nil {
		fmt.Fprintf(stderr, "cvlan-relay serve: %v\n", err)
		return 1
	}
	return 0
}

// config builds the validated Config.
func config(path string, flags []flagValue) (daemon.Config, error) {
	cfg := daemon.DefaultConfig()
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, err
		}
	}
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return cfg, err
	}
	settings := cfg.Settings()
	for _, f := range flags {
		if err := settings[f.setting].Set(f.value); err != nil {
			return cfg, fmt.Errorf("--%s: %w", settings[f.setting].Flag, err)
		}
	}
	return cfg, cfg.Validate()
}
