// Package route keeps the addresses and routes of cvlan's overlay interface equal to a
// desired state. [Router.Set] takes the whole state for one interface (MTU, addresses,
// routes), reads what the kernel holds, and applies only the difference; it is
// idempotent and, because it always starts from what the kernel says, safe to call
// again after a crash or a partial failure.
//
// Ownership: every route it adds carries the rtnetlink protocol number [Protocol], and
// it only ever deletes routes that carry that number, in the main table, through the
// configured interface. Addresses it manages are those of the configured interface,
// except IPv6 link-local ones, which belong to the kernel.
//
// It must never touch another interface, another table or a route it did not mark,
// and it talks to the kernel only through datapath/nl.
package route
