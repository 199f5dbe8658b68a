// Package stub is the command line of the daemons whose function has not landed
// yet (agent, relay, vrouter): it parses their common flags and prints the version.
// Each daemon replaces it with its own typed config when its issue lands.
package stub

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/cvlan/cvlan/internal/version"
)

// config is everything the command line says, checked by Validate before use.
type config struct {
	ConfigPath  string // YAML config file; read once the daemon has work to do
	LogFormat   string // "text" or "json"
	ShowVersion bool
}

// Validate reports the first field that holds a value the binary cannot use.
func (c config) Validate() error {
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format: %q is not text or json", c.LogFormat)
	}
	return nil
}

// Main parses args and returns the process exit code: 0 for success and --help,
// 2 for a usage error.
func Main(binary string, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet(binary, flag.ContinueOnError)
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.StringVar(&cfg.ConfigPath, "config", "", "`path` to the YAML config file")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log `format`: text or json")
	fs.BoolVar(&cfg.ShowVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\nFlags:\n", binary)
		fs.PrintDefaults()
	}

	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = stdout.Write(usage.Bytes())
		return 0
	case err != nil:
		_, _ = stderr.Write(usage.Bytes())
		return 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", binary, fs.Arg(0))
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", binary, err)
		return 2
	}

	// The daemon itself comes with its own issue; until then every valid
	// invocation reports the version.
	fmt.Fprintln(stdout, version.String(binary))
	return 0
}
