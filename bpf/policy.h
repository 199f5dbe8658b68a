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
/* Derived from the conntrack timeouts by the loader (policy.c explains them): how
 * many jiffies a conntrack hint slot vouches for a write, and whether the flow
 * cache is used. */
volatile const __u32 hint_window_j = 0x7fffffff;
volatile const __u32 flow_cache_on = 1;

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

/* The sizes of the fixed maps and tables. */
enum sizes {
	MAX_RULES = 16384,   /* rule ids, and so counter slots, of one policy */
	PFX4_BUCKETS = 16384, /* buckets of the IPv4 prefix hash table */
	PFX6_BUCKETS = 8192, /* buckets of the IPv6 prefix hash table */
	PFX_BUCKET = 8,	     /* prefixes a bucket holds */
	PFX_LENS = 8,	     /* prefix lengths per family in the hash tables */
	MAX_IDENTS = 16384,  /* identities with rule entries, of one policy */
	MAX_RANGES = 65536,  /* port ranges of the groups not in the rule trie */
	GROUP_RANGES = 16,   /* ranges a group may have outside the rule trie */
	GROUP_IN_TRIE = 255, /* a group's range count when its ranges are in the trie */
	FLOW_SLOTS = 1024,   /* flow cache slots per CPU */
	HINT_SLOTS = 65536,  /* conntrack hint */
};

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

/* One generation's parameters (meta[generation]).
 *
 * Identities: the prefixes of the PFX_LENS (or fewer) longest prefix lengths of a
 * family are in that family's hash table (pfx4, pfx6), the others in its
 * LPM trie (id4_gens, id6_gens). A lookup masks the address for each hashed length,
 * longest first, and compares it with every prefix of the bucket its hash names
 * (a prefix is always in its own bucket); no hit, then the trie if it holds
 * anything, else the world. Addresses and masks are the raw bytes of the address
 * read as little-endian words. */
struct gen_meta {
	__u64 mul4;	 /* IPv4 bucket: (addr << 8 | len) * mul4 >> shift4 */
	__u64 mul6[3];	 /* IPv6 bucket: (a0 * mul6[0] + a1 * mul6[1] + len * mul6[2]) >> shift6 */
	__u32 pad0[2];
	__u8 shift4;	 /* 64 - log2(buckets in use) */
	__u8 shift6;
	__u8 nlen4;	 /* prefix lengths in the hash table */
	__u8 nlen6;
	__u8 trie4;	 /* the trie holds prefixes */
	__u8 trie6;
	__u8 len4[PFX_LENS]; /* longest first */
	__u8 len6[PFX_LENS];
	__u8 pad[2];
	__u32 m4[PFX_LENS];	  /* the masks of len4 */
	__u64 m6[PFX_LENS][2];	  /* the masks of len6 */
	__u32 world;	 /* identity index of policy.IdentityWorld: an address no prefix holds */
	__u32 any;	 /* identity index of policy.IdentityAny: the fallback */
};

/* A bucket of the IPv4 prefix table: per prefix addr | (len + 1) << 32 | index << 40
 * (index: of its identity's record); 0: empty. */
struct pfx4_bucket {
	__u64 s[PFX_BUCKET];
};

struct pfx6_slot {
	__u64 a0; /* the masked address */
	__u64 a1;
	__u32 len1; /* prefix length + 1; 0: empty slot */
	__u32 index;
};

struct pfx6_bucket {
	struct pfx6_slot s[PFX_BUCKET];
};

/* An identity with rule entries, at its index in idents (index 0: none). The
 * groups, per direction and protocol (TCP, UDP, ICMP, ICMPv6), are
 * first range | count << 24: count ranges from first in ranges, 0: none,
 * GROUP_IN_TRIE: in the rule trie. */
struct ident_val {
	__u32 identity;
	__u32 grp[2][4];
};

/* The rule trie's key (groups with more than GROUP_RANGES ranges). Data bits, in
 * order: identity (32), dir (8), proto (8), port (16); prefixlen is 48 + the port
 * prefix length. identity and port are big-endian. */
struct rule_key {
	__u32 prefixlen;
	__be32 identity;
	__u8 dir;
	__u8 proto;
	__be16 port;
};

/* A group's ranges are ascending and disjoint. */
struct port_range {
	__u16 lo; /* inclusive, host byte order */
	__u16 hi;
	__u32 rule_id;
	__u16 slot; /* counter slot of rule_id */
	__u8 verdict;
	__u8 pad;
};

struct rule_val {
	__u32 rule_id;
	__u16 slot;
	__u8 verdict;
	__u8 pad;
};

/* Which rule a counter slot counts; written by the loader only. */
struct rule_slot {
	__u32 rule_id;
	__u32 used;
};

/* A flow, in canonical order: side a is the one whose address (then port), read as
 * little-endian words, is smaller. IPv4 addresses fill the first 4 bytes. Ports
 * are in network byte order; ICMP echo carries the identifier as the requester's
 * port and 0 as the responder's. */
struct ct_key {
	__u8 family;
	__u8 proto;
	__be16 port_a;
	__be16 port_b;
	__u16 pad;
	__u8 addr_a[16];
	__u8 addr_b[16];
} __attribute__((aligned(8)));

struct ct_val {
	__u64 last_seen; /* bpf_ktime_get_coarse_ns */
	__u8 dir;	 /* enum direction of the packet that opened the flow */
	__u8 src_is_a;	 /* that packet's source was (addr_a, port_a) */
	__u8 pad[6];
};

/* A flow this CPU recently found live in conntrack, with the direction and side
 * of its opening packet. A cache line. */
struct flow_slot {
	struct ct_key k;
	__u32 stamp; /* jiffies | 1 when conntrack last confirmed it; 0: empty */
	__u8 dir;
	__u8 src_is_a;
	__u8 pad[18];
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
	__u16 slot;
	__u8 has_rule; /* rule_id is the accepting rule (not a reply) */
	__u8 pad;
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

#define RULE_TRIE_DEF \
	__uint(type, BPF_MAP_TYPE_LPM_TRIE); \
	__uint(max_entries, 1); \
	__type(key, struct rule_key); \
	__type(value, struct rule_val); \
	__uint(map_flags, BPF_F_NO_PREALLOC);

#define GENS(name, def) \
	struct { \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS); \
		__uint(max_entries, 2); \
		__type(key, __u32); \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
		__array(values, struct { def }); \
	} name SEC(".maps")

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct policy_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy_state SEC(".maps");

/* The tables of the two generations: generation g uses meta[g] and the g-th half of
 * the others. Plain arrays, so that the verifier inlines every lookup; the loader
 * writes the inactive half. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct gen_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * PFX4_BUCKETS);
	__type(key, __u32);
	__type(value, struct pfx4_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pfx4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * PFX6_BUCKETS);
	__type(key, __u32);
	__type(value, struct pfx6_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pfx6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_IDENTS);
	__type(key, __u32);
	__type(value, struct ident_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} idents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_RANGES);
	__type(key, __u32);
	__type(value, struct port_range);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ranges SEC(".maps");

/* The tries, which only policies with many prefix lengths or large groups use, are
 * inner maps of the two slots of ARRAY_OF_MAPS maps. */
GENS(id4_gens, ID4_TRIE_DEF);
GENS(id6_gens, ID6_TRIE_DEF);
GENS(rule_gens, RULE_TRIE_DEF);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

/* The conntrack hint: per slot (a hash of the flow), jiffies | 1 when a conntrack
 * entry of a flow of that slot was last written. A slot not written within the
 * longest conntrack timeout has no live flow, and a packet of it needs no conntrack
 * lookup. Pinned with conntrack: a restart keeps both. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HINT_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct_hint SEC(".maps");

/* The flow cache: spares a packet of a flow this CPU saw live within about a
 * second the conntrack lookup. FLOW_SLOTS slots per CPU, CPU c's from c *
 * FLOW_SLOTS: the loader sets max_entries to that times the possible CPUs. A plain
 * array rather than a per-CPU one, whose table of per-CPU pointers would cost a
 * second cache miss. Not pinned: a new program starts empty. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOW_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_slot);
} flow_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

/* Per-rule packets and bytes, by counter slot; rule_slots says which rule a slot
 * counts. The loader assigns slots, so that a rule keeps its counter across
 * policies. MAX_RULES slots per CPU, CPU c's from c * MAX_RULES (the loader sets
 * max_entries to that times the possible CPUs): a plain array rather than a
 * per-CPU one, whose table of per-CPU pointers would cost a second cache miss. The
 * loader reads it through mmap. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, struct counter);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, struct rule_slot);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_slots SEC(".maps");

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
