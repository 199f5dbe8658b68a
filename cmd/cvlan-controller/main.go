// Command cvlan-controller is the cvlan control plane: `init` prepares a data
// directory and prints the first operator token; `serve` runs the HTTPS API.
// Configuration comes from a YAML file (--config), CVLAN_* environment variables and
// flags, in increasing precedence.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/cvlan/cvlan/controlplane/controller"
	"github.com/cvlan/cvlan/internal/version"
)

const usage = `usage: cvlan-controller <command> [flags]

commands:
  init      create the data directory, TLS and Noise keys, the database, and the
            first operator token (printed once)
  serve     run the controller
  version   print the version

flags (also CVLAN_* environment variables and a YAML --config file):
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		flags(new(controller.Config), new(string), stdout).PrintDefaults()
		return 0
	}
	cmd, args := args[0], args[1:]
	if cmd == "version" || cmd == "--version" {
		fmt.Fprintln(stdout, version.String("cvlan-controller"))
		return 0
	}
	if cmd != "init" && cmd != "serve" {
		fmt.Fprintf(stderr, "cvlan-controller: unknown command %q\n%s", cmd, usage)
		return 2
	}
	cfg, err := config(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "cvlan-controller: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "init":
		err = controller.Init(ctx, cfg, stdout)
	case "serve":
		err = controller.Run(ctx, cfg, controller.NewLogger(cfg.Log, stderr), nil)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cvlan-controller %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// flags declares the command-line flags into a scratch Config.
func flags(c *controller.Config, configPath *string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("cvlan-controller", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(configPath, "config", "", "YAML configuration file")
	for _, s := range c.Settings() {
		fs.StringVar(s.Ptr, s.Flag, *s.Ptr, s.Usage+" ($"+s.Env+")")
	}
	fs.Func("tls-names", "extra names and addresses for the self-signed certificate, comma-separated ($CVLAN_TLS_NAMES)", func(v string) error {
		c.TLSNames = strings.Split(v, ",")
		return nil
	})
	return fs
}

// config layers defaults, file, environment and flags into a validated Config.
func config(args []string, stdout, stderr io.Writer) (controller.Config, error) {
	var fromFlags controller.Config
	var path string
	fs := flags(&fromFlags, &path, stderr)
	fs.Usage = func() { fmt.Fprint(stdout, usage); fs.SetOutput(stdout); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return controller.Config{}, err
	}
	if fs.NArg() > 0 {
		return controller.Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := controller.DefaultConfig()
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, err
		}
	}
	cfg.ApplyEnv(os.Getenv)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	mine, theirs := cfg.Settings(), fromFlags.Settings()
	for i := range mine {
		if set[mine[i].Flag] {
			*mine[i].Ptr = *theirs[i].Ptr
		}
	}
	if set["tls-names"] {
		cfg.TLSNames = fromFlags.TLSNames
	}
	return cfg, cfg.Validate()
}
