// Command cvlan-relay forwards WireGuard traffic between nodes that cannot reach each
// other directly: UDP sessions rewritten in XDP (with a userspace fallback), framed
// relaying over TCP/TLS and WebSocket for networks that block UDP, and a STUN server.
//
// Today it only parses its flags and prints its version; the relay itself lands with
// its own issue.
package main

import (
	"os"

	"github.com/cvlan/cvlan/internal/stub"
)

func main() { os.Exit(stub.Main("cvlan-relay", os.Args[1:], os.Stdout, os.Stderr)) }
