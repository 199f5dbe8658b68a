// Package xdprelay loads and attaches the relay's XDP fast path (bpf/relay.c) and
// reads and writes its maps with typed values. It knows nothing of bind packets or
// tokens: datapath/relay decides which entries exist, from the session table.
//
// Maps (keys and addresses 16 bytes, IPv4-mapped for IPv4; ports big-endian in the
// kernel and host order here):
//
//   - sessions, an LRU hash: [Key] (source address, source port, destination session
//     port) to a [Rewrite] (new source address and port, new destination address and
//     port, egress interface, new source and destination MAC) plus [Counters]
//     (packets, UDP payload bytes, last seen on CLOCK_MONOTONIC_COARSE) that the
//     program adds to. One entry per direction of a bound session.
//   - bind_paths, an LRU hash: [Key] of a bind packet to the [Path] it came by
//     (ingress interface, the frame's MACs, the relay address it was sent to). The
//     relay copies a side's path into the entry that sends to that side.
//   - stats, a per-CPU array of the program's global counters ([Stats]).
//
// The program relays IPv4 only; IPv6 goes to the stack and the Go path. It computes
// the IPv4 and UDP checksums in full for every relayed packet, never trusting the
// incoming UDP checksum (a veth sender's may be partial). In generic (skb) mode a
// packet that reached the relay with a partial checksum (sent by a process on the
// relay host itself, or through a local veth) keeps the skb's CHECKSUM_PARTIAL state;
// the local receivers of such packets do not verify checksums, but a NIC that
// completes the checksum on the way out would corrupt it: run relays whose peers are
// local containers in native mode.
//
// Native XDP_TX or redirect on a veth delivers nothing unless the receiving peer
// veth has an XDP program of its own; that is the environment's business (tests
// attach an XDP_PASS program there), generic mode does not need it.
//
// Links are not pinned: the session table lives in the relay process, so the program
// goes away with it and a crashed relay leaves nothing attached. This package must
// never attach to an interface it was not asked to, never keep a link past Close, and
// never change an entry's rewrite without being told to.
package xdprelay
