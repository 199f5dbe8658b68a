// Package session is the relay's session table: the sessions the controller issued,
// the bind packets that authenticate each side, and what the relay learned from them.
// It is pure Go: it never opens a socket, touches the kernel or reads the clock on its
// own (callers pass the time), so the XDP fast path (datapath/relay/xdprelay) and the
// Go fallback (datapath/relay/udprelay) can share one table as the single source of
// truth, and it can be tested and fuzzed anywhere.
//
// # Sessions
//
// A session joins two peers, side A and side B, that cannot reach each other. The
// controller issues a [Spec] per session: a session id, one UDP port of the relay per
// side and a 32-byte random [Token] per side, handed only to that side. Each side
// sends a bind packet to its own port, from the exact address and port its WireGuard
// traffic will use, so the relay learns the side's post-NAT endpoint. Once both sides
// are bound, a datagram from A's endpoint to port A leaves the relay from port B to B's
// endpoint and the other way round; the peers see the relay as each other's endpoint.
//
// # Bind packets
//
// A bind packet is the whole UDP payload, [Size] (56) bytes, integers big-endian:
//
//	offset size field
//	     0    4 magic "cvRB" ([Magic])
//	     4    1 version, 1 ([Version])
//	     5    1 type: 1 bind (peer to relay), 2 ack (relay to peer)
//	     6    1 side: 0 A, 1 B
//	     7    1 flags: 0 in a bind; in an ack bit 0 says the other side is bound
//	     8    8 session id
//	    16    8 counter
//	    24   32 MAC: BLAKE2s-256 keyed with the side's token, over bytes 0..23
//
// A WireGuard message starts with its type, 1 to 4, as a little-endian u32; "cvRB" is
// none of those, so the first four bytes tell bind packets from data, in Go
// ([IsBind]) and in XDP alike. Everything that does not start with the magic is data
// and is relayed opaquely.
//
// The relay accepts a bind only if it parses, names the session whose port it arrived
// on and the side that port belongs to, carries a valid MAC under that side's token,
// and its counter is greater than the last counter accepted for that side (replay
// protection; the relay keeps no window because binds are rare and a peer never needs
// to reorder them). Agents should use the Unix time in nanoseconds, or the last
// counter plus one if that is not greater, so counters survive agent restarts. The
// relay remembers accepted counters for as long as the session exists, also across
// idle expiry; a relay restart forgets them, so a captured bind can be replayed to a
// restarted relay until the side binds again (the same trade-off WireGuard makes for
// handshake timestamps; the traffic it could divert is WireGuard-encrypted).
//
// The relay answers every accepted bind with an ack from the same port: the same
// session, side and counter, type ack, flag bit 0 set once the other side is bound,
// and a MAC under the same token, so the agent knows its bind arrived and when the
// session is live. The MAC does not cover the packet's addresses (NAT rewrites them);
// the token authenticates the side, the counter the freshness.
//
// # What this package must never do
//
// It must never accept a bind whose MAC it has not checked, never lower a side's
// counter, never import kernel-facing libraries (netlink, ebpf, x/net) and never
// block: every method returns in bounded time so it can run on the packet path.
package session
