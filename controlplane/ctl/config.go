package ctl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/cvlan/cvlan/controlplane/apiclient"
)

// fileConfig is what login saves: where the controller is, how to trust it, the
// token, and the default tenant. The file holds a secret and is kept 0600.
type fileConfig struct {
	Server      string `yaml:"server"`
	Token       string `yaml:"token"`
	Fingerprint string `yaml:"fingerprint,omitempty"`
	CAFile      string `yaml:"ca_file,omitempty"`
	Tenant      string `yaml:"tenant,omitempty"`
}

// Validate reports the first field that holds a value the client cannot use, and
// brings the fingerprint to its canonical form.
func (c *fileConfig) Validate() error {
	if c.Server != "" {
		s, err := apiclient.ParseServer(c.Server)
		if err != nil {
			return err
		}
		c.Server = s
	}
	if c.Fingerprint != "" {
		fp, err := apiclient.NormalizeFingerprint(c.Fingerprint)
		if err != nil {
			return err
		}
		c.Fingerprint = fp
	}
	if c.Fingerprint != "" && c.CAFile != "" {
		return errors.New("fingerprint, ca_file: set only one")
	}
	return nil
}

// parseConfig reads a config file's bytes: YAML, unknown keys rejected, at most one
// document, fields validated. An empty file is an empty config.
func parseConfig(data []byte) (fileConfig, error) {
	var c fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	switch err := dec.Decode(&c); {
	case errors.Is(err, io.EOF):
		return fileConfig{}, nil
	case err != nil:
		return fileConfig{}, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fileConfig{}, errors.New("more than one YAML document")
	}
	if err := c.Validate(); err != nil {
		return fileConfig{}, err
	}
	return c, nil
}

// loadConfig reads the config at path; a missing file is an empty config.
func loadConfig(path string) (fileConfig, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileConfig{}, nil
	}
	if err != nil {
		return fileConfig{}, fmt.Errorf("reading config: %w", err)
	}
	c, err := parseConfig(data)
	if err != nil {
		return fileConfig{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// saveConfig writes c to path with mode 0600, creating its directory with 0700,
// through a temporary file so that a crash leaves the old file or the new one.
func saveConfig(path string, c fileConfig) error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating config directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".cvlanctl-*.yaml") // created 0600
	if err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename this finds nothing
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	return nil
}

// configFile is the config path: --config, else $CVLAN_CONFIG, else the user's
// config directory.
func (a *app) configFile() (string, error) {
	if a.configPath != "" {
		return a.configPath, nil
	}
	if p := os.Getenv("CVLAN_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the config file: %w (set CVLAN_CONFIG or pass --config)", err)
	}
	return filepath.Join(dir, "cvlan", "cvlanctl.yaml"), nil
}

// settings is the config in force: the file, overridden by CVLAN_* variables,
// overridden by --tenant.
type settings struct {
	fileConfig
	Path string // the config file it was read from
}

// envOverrides are the variables that override the config file, in order.
var envOverrides = []struct {
	name string
	set  func(*fileConfig, string)
}{
	{"CVLAN_SERVER", func(c *fileConfig, v string) { c.Server = v }},
	{"CVLAN_TOKEN", func(c *fileConfig, v string) { c.Token = v }},
	{"CVLAN_TENANT", func(c *fileConfig, v string) { c.Tenant = v }},
	// A trust anchor from the environment replaces the file's, whichever kind.
	{"CVLAN_FINGERPRINT", func(c *fileConfig, v string) { c.Fingerprint, c.CAFile = v, "" }},
	{"CVLAN_CA_FILE", func(c *fileConfig, v string) { c.CAFile, c.Fingerprint = v, "" }},
}

func (a *app) settings() (settings, error) {
	path, err := a.configFile()
	if err != nil {
		return settings{}, err
	}
	c, err := loadConfig(path)
	if err != nil {
		return settings{}, err
	}
	var fromEnv []string
	for _, e := range envOverrides {
		if v := os.Getenv(e.name); v != "" {
			e.set(&c, v)
			fromEnv = append(fromEnv, e.name)
		}
	}
	if len(fromEnv) > 0 {
		if err := c.Validate(); err != nil {
			return settings{}, fmt.Errorf("%v (from %v)", err, fromEnv)
		}
	}
	if a.tenantFlag != "" {
		c.Tenant = a.tenantFlag
	}
	return settings{fileConfig: c, Path: path}, nil
}

// client builds an API client, or says how to log in.
func (s settings) client() (*apiclient.Client, error) {
	if s.Server == "" || s.Token == "" {
		return nil, fmt.Errorf("not logged in: run %s login --server URL --token TOKEN (or set CVLAN_SERVER and CVLAN_TOKEN)", binary)
	}
	return apiclient.New(apiclient.Config{Server: s.Server, Token: s.Token, Fingerprint: s.Fingerprint, CAFile: s.CAFile})
}
