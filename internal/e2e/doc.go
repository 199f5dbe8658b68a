// Package e2e holds cvlan's end-to-end tests: real binaries in network namespaces
// built by internal/e2e/harness, asserting what an operator would check by hand
// (pings across the overlay, a deleted node dropped, fail-static behaviour, key
// rotation). It has no non-test code besides this comment, and its tests never send
// traffic outside the namespaces they create.
package e2e
