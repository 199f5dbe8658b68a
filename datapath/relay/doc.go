// Package relay is the UDP relay's data plane: it serves the relay sessions the
// controller issues, over the XDP fast path where it can attach and the Go path
// everywhere, from one session table.
//
// # Sessions and binds
//
// A session (datapath/relay/session) joins two peers A and B that cannot reach each
// other. The controller gives the relay the whole set of its sessions with
// [Relay.Set] (id, one UDP port per side, one 32-byte token per side) and gives each
// side its own port and token (and the relay's address). Each side sends a bind
// packet (magic "cvRB", version, type, side, session id, counter, BLAKE2s-256 MAC keyed
// by its token; the session package documents the bytes) to its port, from the exact
// address and port its WireGuard traffic will use, and repeats it until the ack says
// the other side is bound, and again whenever its endpoint may have changed. The relay
// learns each side's post-NAT endpoint from the bind's source. From then on a
// datagram from A's endpoint to port A leaves the relay from port B to B's endpoint,
// and the other way round.
//
// # Control path
//
// The relay opens one UDP socket per session port (datapath/relay/udprelay). Bind
// packets always reach these sockets: the XDP program passes everything that starts
// with the magic to the stack. The Go side validates a bind (MAC under the side's
// token, session and side matching the port, counter newer than the last accepted),
// learns the endpoint, answers with an authenticated ack, and once both sides are
// bound writes the session into the XDP program's map, one entry per direction. A
// socket per port was chosen over one raw or XDP-redirected control socket: the
// kernel does the demultiplexing and the port reservation, the same sockets are the
// Go fallback's data path, and the relay never parses unauthenticated traffic in
// privileged raw form.
//
// # XDP fast path
//
// bpf/relay.c (datapath/relay/xdprelay) keeps an LRU map keyed by (source address,
// source port, destination session port). For A's direction the entry holds: new
// source = the relay address B sent its bind to and port B, new destination = B's
// endpoint, egress interface and MACs = the reverse path of B's bind (the interface
// it came in on, its frame's source MAC as next hop, its destination MAC as ours).
// The program rewrites the headers, computes the IPv4 header checksum and the full
// UDP checksum from scratch (the incoming one may be a veth sender's partial
// checksum), and returns XDP_TX, or redirects when B is behind another interface. It
// counts packets, bytes and a last-seen time per entry. Unknown traffic, binds, IPv6,
// fragments and datagrams over xdprelay.MaxUDPLen go to the stack, where the session
// sockets relay what belongs to a session. An entry is written only when both sides
// are IPv4 and both reverse paths are known (their binds came in on an interface the
// program is attached to); otherwise the session runs on the Go path.
//
// [Options.XDP] is cvlan-relay's --xdp: auto (native per interface, falling back to
// generic; if the program cannot load or attach anywhere, Go only), native, generic
// (fail rather than fall back) or off (Go only).
//
// # Go path
//
// Where XDP is off, or for the traffic it passes, the session sockets relay data in
// batches (recvmmsg/sendmmsg). The session table is the single source of truth for
// both paths: the Go path relays exactly what the XDP entries would, and an entry the
// LRU evicts simply moves its traffic to the Go path until the periodic check writes
// it again.
//
// # Expiry
//
// Every [Options.CheckInterval] the relay reads the XDP entries' last-seen times and
// the Go path's, rewrites evicted entries, and unbinds sessions idle for
// [Options.IdleTimeout]: both endpoints are forgotten and the entries deleted, but the
// session, its ports and its replay counters stay until the controller removes it
// with Set. A side re-binds to revive it. Agents keep sessions alive with WireGuard's
// persistent keepalive (relayed data) or by repeating binds.
//
// # Metrics
//
// [Relay.Collector] exports packets and bytes by path (xdp, go), drops by reason,
// binds, sessions (configured, active, on XDP), expiries, the XDP program's pass
// reasons and where it is attached.
//
// # What the controller provides
//
// Per session: a unique id, two distinct free UDP ports of the relay and two
// distinct 32-byte random tokens, each token given only to its side; the relay's
// address per side. The relay does not allocate ports or check tenancy: it serves
// what Set lists and nothing else.
//
// The relay does not authenticate relayed data, only binds: whoever can spoof a bound
// endpoint's address and port can send to the other side, exactly as on a direct
// path. WireGuard authenticates every packet end to end, so that gains nothing.
//
// This package must never relay between endpoints that have not both bound with
// valid tokens, never write an XDP entry for a session that is not in the table, and
// never leave the program attached after Close.
package relay
