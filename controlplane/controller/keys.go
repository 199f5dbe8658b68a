package controller

import (
	"fmt"
	"path/filepath"

	"github.com/flynn/noise"

	"github.com/cvlan/cvlan/controlplane/key"
)

// Files in the data directory.
const noiseFile = "noise.key"

// NoiseKey is the controller's Noise static key pair.
type NoiseKey struct {
	Private [32]byte
	Public  key.MachinePublic
}

// DHKey returns the key in flynn/noise's form.
func (k NoiseKey) DHKey() noise.DHKey {
	pub := k.Public.Raw()
	return noise.DHKey{Private: k.Private[:], Public: pub[:]}
}

// loadOrCreateNoiseKey reads the data directory's Noise key, creating it on first start.
func loadOrCreateNoiseKey(dir string) (NoiseKey, error) {
	p, _, err := key.LoadOrCreatePrivate(filepath.Join(dir, noiseFile))
	if err != nil {
		return NoiseKey{}, fmt.Errorf("Noise key: %w", err)
	}
	return NoiseKey{Private: p.Raw(), Public: p.MachinePublic()}, nil
}
