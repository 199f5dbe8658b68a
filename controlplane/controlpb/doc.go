// Package controlpb holds the protobuf messages of the agent control channel,
// generated from control.proto by `make proto`. It holds no logic; the messages are
// checked by the packages that build and read them (controlplane/control on the
// controller, controlplane/controlclient on the agent).
package controlpb

//go:generate protoc --plugin=protoc-gen-go=../../bin/protoc-gen-go --go_out=. --go_opt=paths=source_relative control.proto
