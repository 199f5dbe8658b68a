// Package nl is cvlan's one wrapper around rtnetlink (github.com/vishvananda/netlink):
// every link, address and route the node software reads or changes goes through a
// [Handle], which is bound to one network namespace when it is opened and never
// follows the calling thread into another one. Dumps (link, address and route lists,
// and the lookups that may fall back to a dump) are retried when the kernel reports
// that the dump was interrupted by a concurrent change, so callers never act on a
// half-read table.
//
// It is the only package that talks rtnetlink. It must never hold a package-global
// handle, never switch the namespace of a thread it does not own and hand that thread
// back in the wrong namespace, and never decide policy: what to add or remove is the
// business of the packages above it (datapath/route, datapath/wg).
package nl
