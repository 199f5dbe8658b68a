// SPDX-License-Identifier: GPL-2.0
/*
 * policy.h: the load-time constants, the types shared with Go (bpf2go -type in
 * datapath/bpfpolicy) and the maps of policy.c. Changing a map's layout makes the
 * maps pinned by an older build incompatible (the loader refuses them).
 */
#ifndef CVLAN_POLICY_H
#define CVLAN_POLICY_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Load-time constants, rewritten by the loader before the programs load. */

/* Bytes before the IP header: 0 on L3 devices (WireGuard, TUN), 14 on Ethernet. */
volatile const __u32 l2_len = 0;
/* Idle time after which a conntrack entry no longer admits replies. */
volatile const __u64 ct_timeout_tcp_ns = 6ULL * 3600 * 1000000000;
volatile const __u64 ct_timeout_other_ns = 60ULL * 1000000000;
/* Idle time after which a first fragment's verdict no longer admits later ones. */
volatile const __u64 frag_timeout_ns = 30ULL * 1000000000;

/* Shared with Go through bpf2go -type; the Go tables test their sizes. */
enum drop_reason {
	DROP_NO_RULE = 0,	    /* no rule entry for the packet: default deny */
	DROP_DENY_RULE = 1,	    /* a deny rule entry matched */
	DROP_MALFORMED = 2,	    /* truncated or inconsistent headers */
	DROP_FRAGMENT = 3,	    /* non-first fragment without an admitted first one */
	DROP_UNSUPPORTED_PROTO = 4, /* IP protocol other than TCP, UDP, ICMP(v6) */
	DROP_UNSUPPORTED_L3 = 5,    /* neither IPv4 nor IPv6 */
	DROP_NO_POLICY = 6,	    /* the active generation has no maps */
	DROP_REASON_MAX,
};

enum pass_reason {
	PASS_RULE = 0,	   /* an accept rule entry matched */
	PASS_REPLY = 1,	   /* reply of a flow a rule accepted (conntrack) */
	PASS_RELATED = 2,  /* ICMP error about a tracked flow */
	PASS_FRAGMENT = 3, /* later fragment of an admitted first fragment */
	PASS_L2 = 4,	   /* ARP and IPv6 neighbour discovery, Ethernet mode only */
	PASS_REASON_MAX,
};

enum direction {
	DIR_INGRESS = 0, /* remote is the source */
	DIR_EGRESS = 1,	 /* remote is the destination */
};

enum verdict {
	VERDICT_DENY = 0,
	VERDICT_ACCEPT = 1,
};

/* The most rule ids one node's policy may use. */
#define MAX_RULES 16384

#define IDENTITY_WORLD 0
#define IDENTITY_ANY 0xffffffff

struct lpm4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* A host address (an IPv4 /32 or IPv6 /128 prefix): looked up by hash, before the
 * tries, which hold the shorter prefixes only. IPv4 fills the first 4 bytes. */
struct host_key {
	__u32 family; /* 4 or 6 */
	__u8 addr[16];
};

/* The rule trie's key (groups too large for the group hash). Data bits, in order: identity (32), dir (8), proto (8), port
 * (16); prefixlen is 48 + the port prefix length. identity and port are big-endian. */
struct rule_key {
	__u32 prefixlen;
	__be32 identity;
	__u8 dir;
	__u8 proto;
	__be16 port;
};

/* The port ranges of one (identity, direction, protocol), found by hash and scanned:
 * a lookup costs the same however many rules there are. A group with more than
 * GROUP_RANGES ranges has n == GROUP_IN_TRIE; its entries are in the rule trie. */
#define GROUP_RANGES 16
#define GROUP_IN_TRIE 0xffffffff

struct group_key {
	__u32 identity;
	__u8 dir;
	__u8 proto;
	__u16 pad;
};

struct port_range {
	__u16 lo; /* inclusive, host byte order */
	__u16 hi;
	__u32 rule_id;
	__u8 verdict;
	__u8 pad[3];
};

struct group_val {
	__u32 n; /* ranges in r, ascending and disjoint; or GROUP_IN_TRIE */
	struct port_range r[GROUP_RANGES];
};

struct rule_val {
	__u32 rule_id;
	__u8 verdict;
	__u8 pad[3];
};

/* A flow, in canonical order: (addr_a, port_a) <= (addr_b, port_b). IPv4 addresses
 * fill the first 4 bytes. Ports are in network byte order; ICMP echo carries the
 * identifier as the requester's port and 0 as the responder's. */
struct ct_key {
	__u8 family;
	__u8 proto;
	__be16 port_a;
	__be16 port_b;
	__u16 pad;
	__u8 addr_a[16];
	__u8 addr_b[16];
};

struct ct_val {
	__u64 last_seen; /* bpf_ktime_get_coarse_ns */
	__u8 dir;	 /* enum direction of the packet that opened the flow */
	__u8 src_is_a;	 /* that packet's source was (addr_a, port_a) */
	__u8 pad[6];
};

struct frag_key {
	__u8 family;
	__u8 proto; /* IPv4 protocol, or the IPv6 fragment header's next header */
	__u16 pad;
	__u32 id;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct frag_val {
	__u64 last_seen;
	__u32 rule_id;
	__u8 has_rule; /* rule_id is the accepting rule (not a reply) */
	__u8 pad[3];
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* The one entry of policy_state. The programs read only active. */
struct policy_state {
	__u32 active; /* generation slot in use: 0 or 1 */
	__u32 pad;
	__s64 version;	  /* policy version of the active generation */
	__u8 digest[32];  /* SHA-256 of the active generation's content */
};

#define HOST_HASH_DEF \
	__uint(type, BPF_MAP_TYPE_HASH); \
	__uint(max_entries, 1); \
	__type(key, struct host_key); \
	__type(value, __u32);

#define ID4_TRIE_DEF \
	__uint(type, BPF_MAP_TYPE_LPM_TRIE); \
	__uint(max_entries, 1); \
	__type(key, struct lpm4_key); \
	__type(value, __u32); \
	__uint(map_flags, BPF_F_NO_PREALLOC);

#define ID6_TRIE_DEF \
	__uint(type, BPF_MAP_TYPE_LPM_TRIE); \
	__uint(max_entries, 1); \
	__type(key, struct lpm6_key); \
	__type(value, __u32); \
	__uint(map_flags, BPF_F_NO_PREALLOC);

#define GROUP_HASH_DEF \
	__uint(type, BPF_MAP_TYPE_HASH); \
	__uint(max_entries, 1); \
	__type(key, struct group_key); \
	__type(value, struct group_val);

#define RULE_TRIE_DEF \
	__uint(type, BPF_MAP_TYPE_LPM_TRIE); \
	__uint(max_entries, 1); \
	__type(key, struct rule_key); \
	__type(value, struct rule_val); \
	__uint(map_flags, BPF_F_NO_PREALLOC);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct policy_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct { HOST_HASH_DEF });
} host_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct { ID4_TRIE_DEF });
} id4_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct { ID6_TRIE_DEF });
} id6_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct { GROUP_HASH_DEF });
} group_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct { RULE_TRIE_DEF });
} rule_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

/* Preallocated: a busy CPU never fails to count, and the loader can create the
 * counters of a large policy in one go (no-prealloc per-CPU elements come from a cache
 * that bulk updates from user space exhaust). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32); /* rule id */
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASON_MAX);
	__type(key, enum drop_reason);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PASS_REASON_MAX);
	__type(key, enum pass_reason);
	__type(value, struct counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pass_counters SEC(".maps");

#endif /* CVLAN_POLICY_H */
