package controller

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is the controller's whole configuration, parsed once at the edge.
type Config struct {
	DataDir  string   `yaml:"data_dir"`
	Listen   string   `yaml:"listen"`
	TLSCert  string   `yaml:"tls_cert"`
	TLSKey   string   `yaml:"tls_key"`
	TLSNames []string `yaml:"tls_names"`
	Database Database `yaml:"database"`
	Log      Log      `yaml:"log"`
}

// Database selects the store.
type Database struct {
	Driver string `yaml:"driver"` // sqlite (default) or postgres
	DSN    string `yaml:"dsn"`    // sqlite: file (default <data_dir>/cvlan.db); postgres: URL
}

// Log selects log output.
type Log struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// DefaultConfig is the configuration before file, environment and flags.
func DefaultConfig() Config {
	return Config{
		DataDir:  "/var/lib/cvlan",
		Listen:   ":8443",
		Database: Database{Driver: "sqlite"},
		Log:      Log{Format: "text", Level: "info"},
	}
}

// Setting is one scalar setting reachable from the environment and a flag.
type Setting struct {
	Name  string  // the YAML path, used in errors
	Env   string  // CVLAN_...
	Flag  string  // --flag
	Usage string  // flag help
	Ptr   *string // where it lands
}

// Settings lists the settings of c that the environment and flags may set.
func (c *Config) Settings() []Setting {
	return []Setting{
		{"data_dir", "CVLAN_DATA_DIR", "data-dir", "directory for keys, certificates and the SQLite database", &c.DataDir},
		{"listen", "CVLAN_LISTEN", "listen", "HTTPS listen address (API and agent channel)", &c.Listen},
		{"tls_cert", "CVLAN_TLS_CERT", "tls-cert", "TLS certificate file (default: self-signed, generated in data_dir)", &c.TLSCert},
		{"tls_key", "CVLAN_TLS_KEY", "tls-key", "TLS private key file", &c.TLSKey},
		{"database.driver", "CVLAN_DB_DRIVER", "db-driver", "sqlite or postgres", &c.Database.Driver},
		{"database.dsn", "CVLAN_DB_DSN", "db-dsn", "SQLite file or PostgreSQL URL", &c.Database.DSN},
		{"log.format", "CVLAN_LOG_FORMAT", "log-format", "text or json", &c.Log.Format},
		{"log.level", "CVLAN_LOG_LEVEL", "log-level", "debug, info, warn or error", &c.Log.Level},
	}
}

// LoadFile merges a YAML file into c; unknown keys are errors.
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return c.parseYAML(path, data)
}

func (c *Config) parseYAML(name string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return nil
}

// ApplyEnv merges CVLAN_* variables into c.
func (c *Config) ApplyEnv(getenv func(string) string) {
	for _, s := range c.Settings() {
		if v := getenv(s.Env); v != "" {
			*s.Ptr = v
		}
	}
	if v := getenv("CVLAN_TLS_NAMES"); v != "" {
		c.TLSNames = strings.Split(v, ",")
	}
}

// Validate checks c and fills derived defaults; errors name the setting.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if c.DataDir == "" {
		return bad("data_dir", "must not be empty")
	}
	if !filepath.IsAbs(c.DataDir) {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return bad("data_dir", "%v", err)
		}
		c.DataDir = abs
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		return bad("listen", "%q is not host:port (for example :8443 or 127.0.0.1:8443)", c.Listen)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls_key", "tls_cert and tls_key go together; set both or neither")
	}
	for i, n := range c.TLSNames {
		if n == "" {
			return bad(fmt.Sprintf("tls_names[%d]", i), "must not be empty")
		}
	}
	switch c.Database.Driver {
	case "sqlite":
		if c.Database.DSN == "" {
			c.Database.DSN = filepath.Join(c.DataDir, "cvlan.db")
		}
	case "postgres":
		if !strings.HasPrefix(c.Database.DSN, "postgres://") && !strings.HasPrefix(c.Database.DSN, "postgresql://") {
			return bad("database.dsn", "a postgres:// URL is required with driver postgres")
		}
	default:
		return bad("database.driver", "%q is not sqlite or postgres", c.Database.Driver)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		return bad("log.format", "%q is not text or json", c.Log.Format)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		return bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	return nil
}
