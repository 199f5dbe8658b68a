package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cvlan/cvlan/controlplane/key"
	"github.com/cvlan/cvlan/controlplane/netmap"
)

// Files in the state directory, all 0600 in a 0700 directory.
const (
	machineKeyFile = "machine.key" // Noise static key: who the agent is to the controller
	nodeKeyFile    = "node.key"    // WireGuard private key
	identityFile   = "identity.json"
	mapFile        = "map.json" // the last applied network map, for fail-static restarts
)

// identity is what enrollment gave the agent.
type identity struct {
	NodeID   string `json:"node_id"`
	Name     string `json:"name"`
	Enrolled bool   `json:"enrolled"`
}

// stateDir is the agent's state directory.
type stateDir string

func (d stateDir) path(name string) string { return filepath.Join(string(d), name) }

func (d stateDir) keys() (machine, node key.Private, err error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return machine, node, fmt.Errorf("creating state directory: %w", err)
	}
	if machine, _, err = key.LoadOrCreatePrivate(d.path(machineKeyFile)); err != nil {
		return machine, node, fmt.Errorf("machine key: %w", err)
	}
	if node, _, err = key.LoadOrCreatePrivate(d.path(nodeKeyFile)); err != nil {
		return machine, node, fmt.Errorf("node key: %w", err)
	}
	return machine, node, nil
}

func (d stateDir) saveNodeKey(k key.Private) error { return key.WritePrivate(d.path(nodeKeyFile), k) }

func (d stateDir) identity() (identity, error) {
	var id identity
	err := d.readJSON(identityFile, &id)
	if errors.Is(err, fs.ErrNotExist) {
		return identity{}, nil
	}
	return id, err
}

func (d stateDir) saveIdentity(id identity) error { return d.writeJSON(identityFile, id) }

// savedMap is the last applied map, or nil when there is none.
func (d stateDir) savedMap() (*netmap.Map, error) {
	b, err := os.ReadFile(d.path(mapFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := netmap.Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.path(mapFile), err)
	}
	return m, nil
}

func (d stateDir) saveMap(m *netmap.Map) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return key.WriteFileAtomic(d.path(mapFile), b, 0o600)
}

// forget removes the node's identity and map (the node was deleted); the machine
// key stays, so the machine can enroll again.
func (d stateDir) forget() error {
	for _, f := range []string{identityFile, mapFile} {
		if err := os.Remove(d.path(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func (d stateDir) readJSON(name string, v any) error {
	b, err := os.ReadFile(d.path(name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", d.path(name), err)
	}
	return nil
}

func (d stateDir) writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return key.WriteFileAtomic(d.path(name), b, 0o600)
}
