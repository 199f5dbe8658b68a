// Package policy is cvlan's policy language and its compiler: one document per
// tenant (tags, groups, named hosts, rules and tests, in YAML or JSON) is parsed with
// located errors, checked against its own tests, and compiled into what each node's
// eBPF programs load (see NodePolicy in compiled.go, the contract with bpf/policy.c
// and the loader): an LPM table from remote prefix to numeric identity and a table of
// (direction, identity, protocol, port range) entries carrying a verdict and a stable
// rule id. It also answers "can A reach B on 443/tcp, and which rule decides?"
// (Compiled.Decide) and which WireGuard peers a node needs (Compiled.Peers).
//
// The package is pure Go and the same on every machine: it must never import
// kernel-facing libraries (netlink, wgctrl, cilium/ebpf, govici) or touch the host,
// so that the controller, cvlanctl and the tests use it anywhere, without root. The
// language and the enforcement semantics are described in README.md next to it.
package policy
