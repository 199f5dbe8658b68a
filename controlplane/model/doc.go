// Package model defines the controller's objects (tenants, networks, nodes,
// enrollment keys, API tokens, policies, relays, IPsec sites, audit entries), the
// rules that make each one valid, and the one error type that says which field of
// which request is wrong. It is pure Go: it never touches the database, the network
// or the kernel.
package model
