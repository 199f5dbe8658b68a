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
//  5. Otherwise the remote address's identity is the one of the longest prefix
//     holding it (no prefix: policy.IdentityWorld), and the destination port (0
//     for ICMP) is looked up among the port ranges of (identity, direction,
//     protocol), and if none matches, among those of (policy.IdentityAny,
//     direction, protocol). No range: dropped ("no_rule"); a deny range: dropped
//     ("deny_rule"); an accept range: passes and opens or refreshes the flow in the
//     conntrack map.
//
// Forward packets of a tracked flow are judged by the rules every time, so a new
// policy that denies a flow stops it at once; only replies ride on the flow.
// Conntrack is an LRU hash keyed by the flow in canonical order (family, protocol,
// both addresses and ports); an entry admits replies for 6 hours after its last
// packet for TCP and 60 seconds for other protocols (coarse kernel time; an entry
// is refreshed at most once a second, and not by the packets the flow cache below
// vouches for, so an idle flow may expire up to 3.5 seconds early). ICMP echo
// requests and replies are tracked by their identifier. There is no TCP state
// machine.
//
// # Cost
//
// The programs avoid helper calls and subprogram calls on the common paths, which
// cost 10-50 ns each on CPUs with return-stack mitigations, against about 1 ns for
// a lookup in an array map, which the verifier inlines. The prefixes are in hash
// tables of our own in arrays (see Maps), the rules are found by binary search
// among at most 16 ranges, counters are per-CPU arrays (the per-rule ones a plain
// array with a region per CPU), and two caches keep most packets away from the
// conntrack hash:
//
//   - The conntrack hint (65536 slots, pinned with conntrack) holds, per hash of a
//     flow, when an entry of a flow with that hash was last written (jiffies). A
//     packet whose slot was not written within the longest conntrack timeout has
//     no live flow, and the programs look no further: unsolicited and denied
//     traffic costs one cache line and no hash lookup. The hint assumes HZ of at
//     most 1907 (Linux allows 1000 at most). Once more flows than slots were
//     opened within the longest timeout, most slots say "maybe" and packets go on
//     to the flow cache and conntrack.
//   - The flow cache (1024 flows per CPU, in one array with a region per CPU, not
//     pinned) remembers for about a second (250 jiffies: 0.25 s at HZ=1000, 2.5 s
//     at HZ=100) that conntrack held a flow live, and in which direction it
//     opened. Packets of such a flow skip the conntrack lookup and refresh. It is
//     used only when both conntrack timeouts are at least 5 seconds.
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
// A policy is a generation of tables. meta holds each generation's parameters;
// pfx4, pfx6, idents and ranges are arrays whose halves hold the two generations;
// id4_gens, id6_gens and rule_gens hold the two generations' tries in the slots of
// ARRAY_OF_MAPS maps.
//
//   - Prefixes: of each family, the prefixes of the (at most 8) longest prefix
//     lengths go into a hash table (pfx4: 16384 buckets, pfx6: 8192, of 8 prefixes
//     each), as many as it holds at one prefix per bucket; a packet's address is
//     masked and looked up for each of those lengths, longest first, and then, if
//     none holds it, in the family's LPM trie, which holds the other prefixes (the
//     programs skip the trie when it is empty). The loader picks hash multipliers
//     until no bucket overflows, or gives the shortest hashed length to the trie.
//   - Identities: each prefix names the record (idents) of its identity: per
//     direction and protocol, where the group's port ranges start in ranges and how
//     many there are. A group has at most 16 ranges there; a group with more is
//     marked and kept in an LPM trie keyed by identity, direction, protocol and a
//     port prefix (the loader splits each range into prefixes), so a verdict costs
//     the same for 10 rules or 10,000. At most 16383 identities with rule entries
//     and 65536 ranges (then the trie) per policy.
//
// policy_state holds the active generation, which a packet reads once. Set writes
// the new policy into the inactive generation (the halves of the arrays, fresh
// tries), waits for an RCU grace period (which orders those writes before the
// switch on every CPU), flips the active generation with one update, and waits for
// another grace period, after which no packet still uses the old generation: a
// packet is judged by one policy, never by a mixture. policy_state also keeps the
// version and a digest of the content, so that Set after a restart knows what is
// already enforced.
//
// rule_counters (a per-CPU array of 16384 counter slots: Set refuses a policy with
// more rule ids) counts the packets and bytes each rule decided, accept or deny;
// rule_slots says which rule each slot counts. A rule keeps its slot, and so its
// counts, across policies; the slot of a rule a new policy drops is cleared after
// the switch. drop_counters and pass_counters (per-CPU arrays) count by reason
// ([DropReasons], [PassReasons]).
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
