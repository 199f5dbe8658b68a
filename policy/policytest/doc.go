// Package policytest holds a deliberately naive reference evaluator of cvlan
// policies, and a generator of random policies and nodes, for testing package
// policy: the compiler's identities, port ranges and map entries must give the
// same answers as looping over the rules of the document.
//
// The evaluator reads the parsed Policy and the nodes directly and favours being
// obviously right over being fast; it is for tests only. Like package policy it
// must never import kernel-facing libraries.
package policytest
