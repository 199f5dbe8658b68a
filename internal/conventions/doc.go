// Package conventions has no code of its own: its tests check the whole repository
// for the conventions that review should not have to catch (STYLE.md item 17).
//
//   - every Go package has exactly one package doc comment ("// Package x ..."; a main
//     package may start it with "Command x" or the binary's name);
//   - every Go file is gofmt-formatted;
//   - no hand-written Go file is longer than 1000 lines;
//   - the pure packages (policy/..., controlplane/...) never import, directly or
//     through other packages, the libraries that touch the kernel: netlink, wgctrl,
//     cilium/ebpf, govici.
//
// Run them with `go test ./internal/conventions/`; `make test` runs them with the rest.
// Nothing may import this package.
package conventions
