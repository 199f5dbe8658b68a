// Command cvlan-agent runs on every node: `up` enrolls the machine (first time,
// with an enrollment key), then keeps its WireGuard interface, addresses and routes
// in line with the network map the controller streams. Settings come from flags and
// CVLAN_AGENT_* environment variables (flags win).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/datapath/agent"
	"github.com/cvlan/cvlan/internal/version"
)

const usage = `usage: cvlan-agent <command> [flags]

commands:
  up        enroll if needed, then run the agent until SIGTERM
  version   print the version

The join command printed by 'cvlanctl key create' is a complete 'up' command.

flags (also CVLAN_AGENT_<FLAG> environment variables, e.g. CVLAN_AGENT_STATE_DIR):
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		fs, _ := flags(stdout)
		fs.PrintDefaults()
		return 0
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "version", "--version":
		fmt.Fprintln(stdout, version.String("cvlan-agent"))
		return 0
	case "up":
	default:
		fmt.Fprintf(stderr, "cvlan-agent: unknown command %q\n%s", cmd, usage)
		return 2
	}
	fs, s := flags(stderr)
	fs.Usage = func() { fmt.Fprint(stdout, usage); fs.SetOutput(stdout); fs.PrintDefaults() }
	applyEnv(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cvlan-agent: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := s.config(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "cvlan-agent: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "cvlan-agent: %v\n", err)
		return 1
	}
	return 0
}

// settings are the raw flag values.
type settings struct {
	controller, controllerKey, enrollKey, name, stateDir, iface, wireguard, metrics, policy string
	listenPort, maxBackoff, pathTimeout                                                     string
	logFormat, logLevel                                                                     string
}

func flags(out io.Writer) (*flag.FlagSet, *settings) {
	d := agent.DefaultConfig()
	s := &settings{}
	fs := flag.NewFlagSet("cvlan-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&s.controller, "controller", "", "the controller's `URL` (https://HOST:PORT)")
	fs.StringVar(&s.controllerKey, "controller-key", "", "the controller's Noise public `key` (mkey:...), pinned")
	fs.StringVar(&s.enrollKey, "enroll-key", "", "enrollment key `secret`; needed only for the first start")
	fs.StringVar(&s.name, "name", "", "wanted node `name` (default: the host name)")
	fs.StringVar(&s.stateDir, "state-dir", d.StateDir, "`directory` for keys, identity and the last network map")
	fs.StringVar(&s.iface, "interface", d.Interface, "WireGuard interface `name`, unique on the host")
	fs.StringVar(&s.listenPort, "listen-port", strconv.Itoa(d.ListenPort), "WireGuard UDP `port`")
	fs.StringVar(&s.wireguard, "wireguard", d.WireGuard, "WireGuard implementation: auto, kernel or userspace")
	fs.StringVar(&s.policy, "policy", d.Policy, "policy enforcement: ebpf, or off (no enforcement; kernels without eBPF only)")
	fs.StringVar(&s.metrics, "metrics-listen", d.MetricsListen, "`host:port` for /metrics and /healthz (empty: off)")
	fs.StringVar(&s.maxBackoff, "max-backoff", "30s", "longest `wait` between attempts to reach the controller")
	fs.StringVar(&s.pathTimeout, "path-timeout", d.PathTimeout.String(), "how long WireGuard may try a peer with no handshake before the agent asks for the next path (direct, UDP relay, framed relay)")
	fs.StringVar(&s.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return fs, s
}

// applyEnv sets each flag from CVLAN_AGENT_<NAME> first, so flags given later win.
func applyEnv(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		env := "CVLAN_AGENT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			f.Value.Set(v)
		}
	})
}

func (s *settings) config(logOut io.Writer) (agent.Config, error) {
	cfg := agent.DefaultConfig()
	cfg.Controller, cfg.EnrollKey, cfg.Name = s.controller, s.enrollKey, s.name
	cfg.StateDir, cfg.Interface, cfg.WireGuard, cfg.MetricsListen, cfg.Policy = s.stateDir, s.iface, s.wireguard, s.metrics, s.policy
	if s.controllerKey != "" {
		k, err := key.ParseMachinePublic(s.controllerKey)
		if err != nil {
			return cfg, fmt.Errorf("controller-key: %w", err)
		}
		cfg.ControllerKey = k
	}
	port, err := strconv.Atoi(s.listenPort)
	if err != nil {
		return cfg, fmt.Errorf("listen-port: %q is not a number", s.listenPort)
	}
	cfg.ListenPort = port
	if cfg.MaxBackoff, err = time.ParseDuration(s.maxBackoff); err != nil {
		return cfg, fmt.Errorf("max-backoff: %q is not a duration (like 30s)", s.maxBackoff)
	}
	if cfg.PathTimeout, err = time.ParseDuration(s.pathTimeout); err != nil {
		return cfg, fmt.Errorf("path-timeout: %q is not a duration (like 12s)", s.pathTimeout)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.logLevel)); err != nil {
		return cfg, fmt.Errorf("log-level: %q is not debug, info, warn or error", s.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch s.logFormat {
	case "text":
		cfg.Log = slog.New(slog.NewTextHandler(logOut, opts))
	case "json":
		cfg.Log = slog.New(slog.NewJSONHandler(logOut, opts))
	default:
		return cfg, fmt.Errorf("log-format: %q is not text or json", s.logFormat)
	}
	return cfg, cfg.Validate()
}
