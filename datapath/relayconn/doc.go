// Package relayconn is the agent's side of relaying: it carries the WireGuard
// packets of peers that must be reached through a relay (datapath/relay), over a
// UDP relay session or a framed relay connection (TLS/TCP or WebSocket).
//
// # Design
//
// For each relayed peer the [Proxy] owns a loopback UDP socket, its endpoint, on
// 127.0.0.1 with a port of its own. The agent sets that address as the peer's
// WireGuard endpoint. Datagrams WireGuard sends there go to the peer's relay path;
// datagrams coming back from the path are written from the endpoint to
// 127.0.0.1:WireGuardPort, so WireGuard sees all of the peer's packets come from
// that one endpoint and has nowhere to roam to. Kernel WireGuard and wireguard-go both listen on
// 0.0.0.0:<port>, so the same code serves both, without privileges. A peer keeps
// its endpoint while it stays relayed, across changes of mode or relay, so the
// WireGuard configuration does not churn; the agent moves the peer to a direct
// endpoint (and drops it from [Proxy.Set]) when a direct path works.
//
// A UDP path has one socket connected to the relay's port for this side of the
// session. It sends the bind packets (datapath/relay/session) and the WireGuard
// packets alike, so the relay learns the exact post-NAT address and port the
// WireGuard packets arrive from. It binds at once and every BindRetry (1 s) until the
// relay acks a bind saying both sides are bound, then every BindRefresh (20 s),
// which keeps the NAT mapping open; it retries fast again when a bind goes
// unanswered, when the socket reports the relay unreachable (ICMP port unreachable)
// and when it has sent for 5 BindRetry without receiving anything. Acks are checked
// (session.Parse, session.Verify with this side's token, same session, side and a
// recent counter); anything else starting with the bind magic is dropped. Bind
// counters are the Unix time in nanoseconds, strictly increasing in the process, so
// they stay fresh across agent restarts.
//
// A framed path shares one framed.Client per relay with every peer reached through
// that relay (a second connection of the same node would replace the first on the
// relay, so all paths through a relay must list the same URLs; a new list replaces
// the connection). Its goroutine dials the URLs in order, backs off between rounds
// (RedialMin doubling to RedialMax), receives until the connection fails and dials
// again. Received packets go to the loopback endpoint of the peer whose node key
// sent them; peer-gone and not-allowed notices are counted and recorded in the
// peer's status, and the connection stays. A client that no path uses any more is
// closed.
//
// # Trade-offs
//
// Relayed packets take a userspace hop on the agent: each one is read from and
// written to a socket by this process, a few microseconds and two system calls per
// packet in each direction, with a reading goroutine per peer for each direction
// (per framed relay for packets coming back). Only relayed peers pay it, and their
// packets also cross the relay, which costs more. Batching (recvmmsg) or a BPF
// redirect could remove it later without changing the API.
//
// The proxy's sockets are ordinary sockets of the agent: unlike WireGuard's, they
// carry no firewall mark, so the relays' addresses must not be routed into the
// tunnel.
//
// The alternative to a loopback proxy is to send the bind packets from WireGuard's
// own port (a raw socket forging the source port, or a socket shared with
// SO_REUSEPORT). It needs CAP_NET_RAW or cooperation from the WireGuard
// implementation (kernel WireGuard never shares its socket), the acks would arrive
// at WireGuard's port where WireGuard drops them (so the agent could not know
// whether it is bound without a packet tap), and conntrack may treat forged packets
// differently from WireGuard's. Owning the socket that talks to the relay makes the
// bind authoritative by construction, shows the acks to the agent, and works the
// same for kernel and userspace WireGuard; the cost is the hop above.
//
// # Relay restarts
//
// A restarted UDP relay forgets which address each side bound from and drops their
// packets until they bind again. While it is down, the connected socket reports
// ICMP port unreachable, and a path that sends without receiving anything for 5
// BindRetry binds again; the relay accepts such a bind as soon as it is back (it
// forgot the old counters, and ours increase anyway). A side that sends nothing
// notices only at its next refresh, so traffic resumes about 5 BindRetry after the
// restart when WireGuard sends from both sides (its handshake retries do), and
// within BindRefresh at worst. A framed relay that restarts breaks the connection;
// the client redials with backoff. Packets sent meanwhile are dropped and counted
// (a framed path counts them as not_connected); WireGuard retransmits its
// handshakes, so tunnels recover by themselves.
//
// # IPv4 and IPv6
//
// Loopback endpoints are always IPv4 (127.0.0.1): both WireGuard implementations
// listen on IPv4, and 127.0.0.1 exists on every host. A UDP path opens an IPv4 or
// IPv6 socket according to the relay's address (IPv4-mapped addresses count as
// IPv4). A framed path reaches whatever its URLs resolve to.
//
// # Metrics
//
// With Config.Registry set, the proxy exports cvlan_agent_relay_packets_total and
// cvlan_agent_relay_bytes_total by path (udp, tcp, ws) and direction (out: to the
// relay; in: from it), cvlan_agent_relay_drops_total by reason (foreign_source,
// no_path, not_connected, send_error, deliver_error, invalid_ack, unknown_peer),
// cvlan_agent_relay_binds_sent_total, cvlan_agent_relay_binds_acked_total,
// cvlan_agent_relay_framed_connects_total by transport,
// cvlan_agent_relay_framed_dial_failures_total,
// cvlan_agent_relay_framed_notices_total by kind (peer_gone, not_allowed), and the
// gauges cvlan_agent_relay_peers by mode and cvlan_agent_relay_framed_connected.
//
// # What this package must never do
//
// It must never deliver to WireGuard a datagram on a peer's endpoint that did not
// come from that peer's path (the UDP socket is connected to the relay; framed
// packets are dispatched by their authenticated source node key), never carry to a
// relay a datagram that did not come from 127.0.0.1:WireGuardPort (others are
// counted as foreign_source and dropped), never send a bind counter that is not
// greater than the last, never put a token anywhere but in a MAC (logs included),
// never touch WireGuard's configuration (the agent does) and never wait for the
// network in Set (binds and dials run in the background).
package relayconn
