// Command cvlan-agent runs on every node of a cvlan network: it enrolls with the
// controller, keeps the kernel WireGuard interface and the eBPF TC policy programs in
// step with the network map it receives, and reports endpoints and counters.
//
// Today it only parses its flags and prints its version; the agent itself lands with
// its own issue.
package main

import (
	"os"

	"github.com/cvlan/cvlan/internal/stub"
)

func main() { os.Exit(stub.Main("cvlan-agent", os.Args[1:], os.Stdout, os.Stderr)) }
