// Command cvlanctl is the operator's command line for a cvlan controller: it logs in
// with a pinned server certificate and manages tenants, networks, nodes, enrollment
// keys, API tokens, policies, relays and IPsec sites over the REST API. See
// docs/cvlanctl.md.
package main

import (
	"os"

	"github.com/cvlan/cvlan/controlplane/ctl"
)

func main() { os.Exit(ctl.Main(os.Args[1:], os.Stdout, os.Stderr)) }
