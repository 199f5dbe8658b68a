// Package daemon assembles cvlan-relay from a validated Config: the relay key and
// TLS certificate in the data directory, the UDP relay (datapath/relay, XDP fast
// path and Go fallback), the STUN server (datapath/relay/stun), the framed relay
// over TCP/TLS and WebSocket (datapath/relay/framed) on one HTTPS port, and
// /metrics and /healthz on a plain-HTTP port. It reads no flags or environment
// itself: package main (cmd/cvlan-relay) layers defaults, a YAML file,
// CVLAN_RELAY_* variables and flags into a Config.
//
// # Configuration
//
// The YAML file is parsed into a node tree and walked key by key, so that every
// error names the key (data_dir, udp.xdp, framed.listen, ...) and its line; unknown
// keys, aliases and second documents are errors. Validate checks the merged Config
// and names the bad setting.
//
// # Lifecycle
//
// [Run] starts everything, calls ready with the addresses, and serves until its
// context ends (SIGTERM or SIGINT in cvlan-relay). It then drains: /healthz answers
// 503, the framed listener closes (new connections are refused), existing framed
// connections stay up for Config.DrainGrace so that a load balancer or the agents
// can move away, then the framed connections, the STUN socket, the UDP relay (its
// XDP program detached) and the metrics listener close, and Run returns nil. The
// drain always lasts the whole grace period: it is what the health check needs to
// see the 503.
//
// # Controller
//
// With controller.url and controller.key the relay connects to the controller over
// the agents' Noise channel, authenticated by its relay key (which an operator
// registers with cvlanctl relay create --relay-key), and follows its relay
// configuration (controlplane/relaymap): the UDP sessions it hosts go to
// relay.Relay.Set, and the framed relay serves exactly the machines the controller
// names as nodes, each reaching only the nodes of its own tenant the controller
// paired it with (checked at every send, so new pairs apply at once). It links to
// the relays of its region whose ID is greater than its own (framed.Server.Mesh,
// redialed with backoff) and admits the others' links. When the
// controller is away the relay keeps serving its last configuration. Without a
// controller, or before its first configuration arrives, the framed relay refuses
// every machine with [ErrNoController] and the UDP relay has no sessions. This
// package must never serve a framed client that no controller authorized.
package daemon
