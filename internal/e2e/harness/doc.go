// Package harness runs cvlan's daemons in network namespaces for end-to-end tests: it
// builds the binaries once per test process, makes hub namespaces with a bridge (LANs)
// and node namespaces attached to them by veth pairs, starts processes inside those
// namespaces with their output in per-process logs, and tears all of it down when the
// test ends, when -test.timeout is about to fire, or, for leftovers of a crashed run,
// when the next test process starts (see Main).
//
// Every name it makes (namespaces, interface names handed to daemons, temporary
// directories) starts with a prefix that encodes the test process's pid, so that a later
// run can tell which leftovers belong to a dead process.
//
// The harness must never touch an interface, namespace, socket, pin or process it did
// not create or that a test did not register with H.OwnInterface, and never send
// traffic, create interfaces or start processes outside namespaces it created: all
// topology lives in named namespaces (veth pairs are created inside them, never in the
// host namespace), and processes are started on a thread that has entered the target
// namespace. It is test-only code: nothing outside tests may import it.
package harness
