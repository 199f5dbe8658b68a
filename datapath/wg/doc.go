// Package wg runs cvlan's WireGuard device and keeps its configuration equal to a
// desired state.
//
// [Open] creates the interface: a kernel WireGuard link when the kernel has one, or
// else wireguard-go in this process (a TUN device, UDP sockets and the UAPI socket in
// /var/run/wireguard), which wgctrl configures the same way. [Device.Set] takes the
// whole desired configuration (private key, listen port, peers), reads the device,
// and applies only the difference: a peer that did not change is not touched, so its
// session and counters survive every update. [Device.Stats] reports per-peer counters.
//
// The device lives in the network namespace of the process that opens it: wireguard-go
// creates its TUN device, sockets and goroutines from whatever thread runs them, so
// this package must never be used from a thread switched into another namespace. It
// must never replace the peer list wholesale (ReplacePeers), never log private keys,
// and never reuse the interface name of another live device on the host (the UAPI
// socket directory is shared by all network namespaces).
package wg
