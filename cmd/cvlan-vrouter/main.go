// Command cvlan-vrouter is the agent plus IPsec: it turns the IPsec sites of its tenant
// into strongSwan connections over VICI, manages the XFRM policies, states and routes,
// and advertises the sites' subnets to the overlay.
//
// Today it only parses its flags and prints its version; the vrouter itself lands with
// its own issue.
package main

import (
	"os"

	"github.com/cvlan/cvlan/internal/stub"
)

func main() { os.Exit(stub.Main("cvlan-vrouter", os.Args[1:], os.Stdout, os.Stderr)) }
