package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Files in the data directory.
const KeyFile = "relay.key"

// LoadOrCreateKey reads the relay's static key from dataDir/relay.key, creating the
// directory (0700) and the key (0600) on first use. created reports a new key.
func LoadOrCreateKey(dataDir string) (priv key.Private, created bool, err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return key.Private{}, false, fmt.Errorf("creating data directory: %w", err)
	}
	priv, created, err = key.LoadOrCreatePrivate(filepath.Join(dataDir, KeyFile))
	if err != nil {
		return key.Private{}, false, fmt.Errorf("relay key: %w", err)
	}
	return priv, created, nil
}

// RelayPublic is the public half of a relay key, as clients pin it and as
// `cvlanctl relay create --relay-key` takes it.
func RelayPublic(priv key.Private) key.RelayPublic {
	return key.RelayPublicFromRaw(priv.MachinePublic().Raw())
}
