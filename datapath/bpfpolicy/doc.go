// Package bpfpolicy enforces a node's compiled policy (policy.NodePolicy) in the
// kernel: TC programs on the overlay interface (bpf/policy.c), their maps, and the
// loader that fills them. It is the only package that loads the policy programs or
// writes their maps; everything else goes through [Open] and [Enforcer.Set].
//
// # What the programs do
//
// cvlan_ingress judges packets arriving from the overlay (the remote is the source),
// cvlan_egress packets leaving into it (the remote is the destination). The overlay
// interface carries bare IP packets (kernel WireGuard, TUN); Options.L2 selects
// Ethernet framing instead, for veth in tests. For each packet:
//
//  1. Parse IPv4 or IPv6 and TCP, UDP, ICMP (in IPv4) or ICMPv6 (in IPv6). IPv6
//     hop-by-hop, routing, destination options and fragment headers are skipped, up
//     to six of them.
//  2. A later fragment is decided by its first fragment (see below).
//  3. An ICMP error (unreachable, too big, time exceeded, parameter problem,
//     IPv4 source quench) whose quoted packet belongs to a tracked flow and
//     travelled the other way passes ("related"). A quoted IPv6 packet must carry
//     its transport header right after the IPv6 header to be recognised.
//  4. A packet that travels against a tracked flow (a reply) passes ("reply").
//  5. Otherwise the remote address is looked up among the host prefixes (/32, /128)
//     and then in the identity trie of its family (longest prefix; no match is
//     policy.IdentityWorld). The destination port (0 for ICMP) is then looked up
//     among the port ranges of (identity, direction, protocol), and if none matches,
//     among those of (policy.IdentityAny, direction, protocol). No range: dropped
//     ("no_rule"); a deny range: dropped ("deny_rule"); an accept range: passes and
//     opens or refreshes the flow in the conntrack map.
//
// Forward packets of a tracked flow are judged by the rules every time, so a new
// policy that denies a flow stops it at once; only replies ride on the flow.
// Conntrack is an LRU hash keyed by the flow in canonical order (family, protocol,
// both addresses and ports); an entry admits replies for 6 hours after its last
// packet for TCP and 60 seconds for other protocols (coarse kernel time, so a few
// milliseconds more). ICMP echo requests and replies are tracked by their identifier.
// There is no TCP state machine.
//
// # Fragments and malformed packets
//
// A first fragment (offset 0, more fragments set) is judged like a whole packet by
// the ports it carries; if it passes, its later fragments (same family, addresses,
// protocol and IP identification) pass for 30 seconds after the last one seen and
// count on the same rule. A later fragment without an admitted first fragment,
// including one that arrives before it, is dropped ("fragment"). IPv6 atomic
// fragments (offset 0, no more fragments) are whole packets.
//
// Malformed packets are dropped ("malformed"): an IP header shorter than its minimum
// or its own length field, a wrong version, a length field beyond the packet, a
// transport header cut short (TCP 20 bytes with a data offset of at least 5, UDP 8,
// ICMP 8) also in a first fragment, an IPv6 extension header beyond the packet, or
// more than six extension headers. Headers are read in place from the packet's
// linear data, which the programs extend to the first 256 bytes where it is shorter;
// a header beyond the linear data counts as missing. Other IP protocols (including AH
// and ESP) are dropped as "unsupported_proto", non-IP frames as "unsupported_l3",
// except that in Ethernet mode ARP and IPv6 neighbour discovery pass ("l2"). If the
// active generation is missing its maps, packets drop as "no_policy".
//
// # Maps and the generation switch
//
// Identities (host prefixes in a hash, shorter prefixes in one LPM trie per family)
// and rules exist in two generations, the two slots of ARRAY_OF_MAPS maps
// (host_gens, id4_gens, id6_gens, group_gens, rule_gens). The rules of one
// (identity, direction, protocol) are a group: up to 16 disjoint port ranges in one
// hash entry, scanned in order, so a verdict costs the same for 10 rules or 10,000;
// a group with more ranges is marked in the hash and kept in an LPM trie keyed by
// identity, direction, protocol and a port prefix (the loader splits each range into
// prefixes). policy_state holds the active slot, which a packet reads once. Set
// writes the new policy into fresh maps, puts them into the inactive slot, flips the
// active slot with one update, and waits until no packet still uses the old
// generation: a packet is judged by one policy, never by a mixture.
// policy_state also keeps the version and a digest of the content, so that Set after
// a restart knows what is already enforced.
//
// rule_counters (per-CPU hash by rule id, preallocated for 16384 rule ids: Set
// refuses a policy with more) counts the packets and bytes each rule decided, accept
// or deny; drop_counters and pass_counters (per-CPU arrays) count
// by reason ([DropReasons], [PassReasons]).
//
// # Pinning and restarts
//
// Maps and the TCX links are pinned under Options.PinDir (default
// /sys/fs/bpf/cvlan/<interface>; bpffs is mounted at /sys/fs/bpf if needed). Close
// leaves them in place, so the last policy stays enforced while the agent is down.
// The next Open reuses the pinned maps (policy, flows and counters survive) and
// moves the pinned links to its freshly loaded programs with a link update, so the
// hooks never run without a program. The TCX links go to the head of each hook's
// chain, and a pass ends the chain (TC_ACT_OK), as a drop does. Where the kernel lacks TCX, Open attaches
// direct-action cls_bpf filters to a clsact qdisc instead and replaces them in place
// on the next Open. Remove detaches and unpins everything. Maps pinned by a build
// with a different map layout are refused; Remove them first.
//
// One Enforcer per interface and pin directory: two Enforcers on the same pins would
// overwrite each other's generations. Open acts in the network namespace of the
// calling thread. The package must never write a map of an active generation, never
// detach before the replacement is attached, and never touch another program's
// hooks or filters.
package bpfpolicy
