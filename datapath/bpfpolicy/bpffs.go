package bpfpolicy

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// bpffsRoot is where bpffs is mounted if a pin directory below it is not on one.
const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS makes sure that dir (which may not exist yet) is on a bpf filesystem,
// mounting one at /sys/fs/bpf if dir is below it and nothing is mounted there.
func ensureBPFFS(dir string, log *slog.Logger) error {
	dir = filepath.Clean(dir)
	on, err := onBPFFS(dir)
	if err != nil || on {
		return err
	}
	if dir != bpffsRoot && !strings.HasPrefix(dir, bpffsRoot+"/") {
		return fmt.Errorf("pin directory %s is not on a bpf filesystem", dir)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting bpffs at %s: %w", bpffsRoot, err)
	}
	log.Info("mounted bpffs", "path", bpffsRoot)
	if on, err := onBPFFS(dir); err != nil || !on {
		return errors.Join(err, fmt.Errorf("pin directory %s is not on bpffs even after mounting %s", dir, bpffsRoot))
	}
	return nil
}

// onBPFFS reports whether the deepest existing directory of path is on bpffs.
func onBPFFS(path string) (bool, error) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(path, &st)
		if err == nil {
			return st.Type == unix.BPF_FS_MAGIC, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return false, fmt.Errorf("statfs %s: %w", path, err)
		}
		parent := filepath.Dir(path)
		if parent == path {
			return false, nil
		}
		path = parent
	}
}
