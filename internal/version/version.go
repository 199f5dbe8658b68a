// Package version holds the build version shared by every cvlan binary.
//
// Version is stamped at link time by the Makefile:
//
//	go build -ldflags "-X github.com/cvlan/cvlan/internal/version.Version=v0.1.0" ./cmd/...
//
// It reads nothing from the environment and has no side effects, so any package may
// import it.
package version

import (
	"fmt"
	"runtime"
)

// Version is the release this binary was built from, as `git describe --always --dirty`
// printed it. It stays "dev" for builds that were not stamped with -ldflags -X.
var Version = "dev"

// String returns the one-line version report for the named binary, for example
// "cvlan-agent v0.1.0 go1.26.8 linux/amd64".
func String(binary string) string {
	return fmt.Sprintf("%s %s %s %s/%s", binary, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
