// SPDX-License-Identifier: GPL-2.0
/*
 * policy.c enforces one node's compiled policy (policy.NodePolicy) on the node's
 * overlay interface: cvlan_ingress runs on packets arriving from the overlay,
 * cvlan_egress on packets leaving into it. datapath/bpfpolicy loads these programs and
 * fills their maps; its package doc describes the behaviour in prose.
 *
 * Per packet: parse (IPv4/IPv6, TCP/UDP/ICMP/ICMPv6) -> related ICMP error? pass ->
 * conntrack reply? pass -> identity of the remote address (prefix hash tables, then
 * the LPM trie; miss = world) -> rule (the port ranges of identity, direction and
 * protocol; the remote's identity first, then IdentityAny) -> accept: conntrack
 * entry, per-rule counter, pass; deny or no rule: drop counted by reason.
 *
 * Cost. On CPUs with return-stack mitigations a helper call (a hash or LPM lookup,
 * reading the clock) costs 30-50 ns and a call of a BPF subprogram about 10 ns,
 * while a lookup in an array map, which the verifier inlines, costs about 1 ns. So
 * the common paths use arrays only: the prefix and rule tables are arrays (hash
 * tables of our own, and ranges found by binary search), counters are arrays
 * indexed by CPU, the time is jiffies (inlined), and the rule lookup is inlined.
 * Conntrack stays an LRU hash, looked up only when the flow may be tracked (the
 * hint says so) and this CPU has not seen the flow live within about a second
 * (the flow cache).
 *
 * The prefix tables, tries, identities, ranges and rule trie exist in two
 * generations (halves of arrays; the tries in slots of ARRAY_OF_MAPS maps);
 * policy_state.active, read once per packet, selects one. The loader fills the
 * inactive generation and flips active with one map update.
 */
#include "policy.h"

#define IPV6_MAX_EXT 6
/* Headers are read in place. If they are not in the skb's linear data, the first
 * PULL_LEN bytes are made linear; headers beyond those are treated as missing. */
#define PULL_LEN 256
#define MAX_HDR_OFF 0x3fff
#define CT_REFRESH_NS 1000000000ULL

/* The flow cache's window, in jiffies: 0.25 s at HZ=1000, 2.5 s at HZ=100. The
 * loader turns the cache off (flow_cache_on) unless both conntrack timeouts are at
 * least 5 s: an entry it vouches for was refreshed at most a window and
 * CT_REFRESH_NS ago. */
#define FLOW_WINDOW_J 250
/* hint_window_j, set by the loader, is the longest conntrack timeout counted at 2^19
 * ns a jiffy (so it is long enough up to HZ=1907), plus 1000 jiffies for hint slots
 * that two CPUs wrote out of order. */

#define FRAG_NONE 0
#define FRAG_FIRST 1
#define FRAG_LATER 2

/* What parsing learnt about a packet. */
struct pkt {
	__u64 saddr[2]; /* the address's bytes as little-endian words; IPv4 in the low half of [0] */
	__u64 daddr[2];
	__u8 family; /* 4 or 6 */
	__u8 proto;  /* TCP, UDP, ICMP or ICMPv6 */
	__u8 frag;   /* FRAG_* */
	__u8 frag_nh;
	__be16 sport; /* ct ports, see struct ct_key */
	__be16 dport;
	__u16 rule_port; /* destination port, host order; 0 for ICMP */
	__u8 icmp_type;
	__u8 pad;
	__u32 frag_id;
	__u32 l4off; /* offset of the L4 header from skb->data */
};

/* Room for icmp_related, whose embedded packet and flow key would not fit on the
 * stack beside its caller's. Programs do not nest on a CPU, so one slot per CPU does. */
struct icmp_scratch {
	struct pkt e;
	struct ct_key k;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_scratch);
} icmp_scratch SEC(".maps");

/* ld64 and ld32 read a word in place: packet data need not be aligned here. */
static __always_inline __u64 ld64(const void *p)
{
	return *(const __u64 *)p;
}

static __always_inline __u32 ld32(const void *p)
{
	return *(const __u32 *)p;
}

/* pkt_hdr returns a pointer to len bytes at off in the packet, or NULL if the
 * packet's linear data is shorter. len must be a constant. */
static __always_inline const __u8 *pkt_hdr(struct __sk_buff *skb, __u32 off, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (off > MAX_HDR_OFF)
		return NULL;
	if (data + off + len > end)
		return NULL;
	return data + off;
}

static __always_inline void bump(void *map, __u32 idx, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(map, &idx);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline int drop(struct __sk_buff *skb, __u32 reason)
{
	bump(&drop_counters, reason, skb->len);
	return TC_ACT_SHOT;
}

static __always_inline int pass(struct __sk_buff *skb, __u32 reason)
{
	bump(&pass_counters, reason, skb->len);
	return TC_ACT_OK;
}

static __always_inline int is_icmp(__u8 family, __u8 proto)
{
	return (family == 4 && proto == IPPROTO_ICMP) || (family == 6 && proto == IPPROTO_ICMPV6);
}

static __always_inline int icmp_is_error(__u8 family, __u8 type)
{
	if (family == 4) /* unreachable, source quench, time exceeded, parameter problem */
		return type == 3 || type == 4 || type == 11 || type == 12;
	return type >= 1 && type <= 4; /* unreachable, too big, time exceeded, parameter */
}

/* l4_ports reads the transport header at off into p. hdr is the first 8 bytes. For
 * ICMP echo the identifier becomes the requester's port (request: sport, reply:
 * dport). Returns 0 or a drop reason. */
static __always_inline int l4_ports(struct pkt *p, const __u8 *hdr)
{
	__be16 a, b;
	__builtin_memcpy(&a, hdr, 2);
	__builtin_memcpy(&b, hdr + 2, 2);
	switch (p->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		p->sport = a;
		p->dport = b;
		p->rule_port = bpf_ntohs(b);
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__be16 id;
		__u8 type = hdr[0];
		__u8 req = p->proto == IPPROTO_ICMP ? 8 : 128;
		__u8 rep = p->proto == IPPROTO_ICMP ? 0 : 129;
		__builtin_memcpy(&id, hdr + 4, 2);
		p->icmp_type = type;
		p->rule_port = 0;
		p->sport = type == req ? id : 0;
		p->dport = type == rep ? id : 0;
		return 0;
	}
	}
	return DROP_UNSUPPORTED_PROTO;
}

/* parse_l4 loads the transport header of a packet whose L4 header starts at off and
 * whose IP packet ends at end. */
static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p, __u32 off, __u32 end)
{
	const __u8 *hdr;
	__u32 need;

	switch (p->proto) {
	case IPPROTO_TCP:
		need = 20;
		break;
	case IPPROTO_UDP:
		need = 8;
		break;
	case IPPROTO_ICMP:
		if (p->family != 4)
			return DROP_UNSUPPORTED_PROTO;
		need = 8;
		break;
	case IPPROTO_ICMPV6:
		if (p->family != 6)
			return DROP_UNSUPPORTED_PROTO;
		need = 8;
		break;
	default:
		return DROP_UNSUPPORTED_PROTO;
	}
	if (off + need > end)
		return DROP_MALFORMED;
	if (need == 20) {
		hdr = pkt_hdr(skb, off, 20);
		if (!hdr || (hdr[12] >> 4) < 5) /* data offset */
			return DROP_MALFORMED;
	} else {
		hdr = pkt_hdr(skb, off, 8);
		if (!hdr)
			return DROP_MALFORMED;
	}
	p->l4off = off;
	return l4_ports(p, hdr);
}

/* ip_end returns where the IP packet that starts at off ends, given its declared
 * length, or 0 if the packet is shorter than that. */
static __always_inline __u32 ip_end(struct __sk_buff *skb, __u32 off, __u32 declared)
{
	if (declared == 0 && skb->gso_size) /* BIG TCP leaves the length field 0 */
		return skb->len;
	if (off + declared > skb->len)
		return 0;
	return off + declared;
}

static __always_inline int parse_v4(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	const __u8 *ip = pkt_hdr(skb, off, 20);
	if (!ip)
		return DROP_MALFORMED;
	__u32 ihl = (ip[0] & 0xf) * 4;
	if ((ip[0] >> 4) != 4 || ihl < 20)
		return DROP_MALFORMED;
	__u32 end = ip_end(skb, off, ((__u32)ip[2] << 8) | ip[3]);
	if (end == 0 || off + ihl > end)
		return DROP_MALFORMED;

	p->family = 4;
	p->proto = ip[9];
	p->frag_nh = ip[9];
	p->saddr[0] = ld32(ip + 12);
	p->daddr[0] = ld32(ip + 16);

	__u16 fo = ((__u16)ip[6] << 8) | ip[7];
	p->frag_id = ((__u32)ip[4] << 8) | ip[5];
	if (fo & 0x1fff) {
		p->frag = FRAG_LATER;
		return 0;
	}
	if (fo & 0x2000)
		p->frag = FRAG_FIRST;
	return parse_l4(skb, p, off + ihl, end);
}

static __always_inline int parse_v6(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	const __u8 *ip = pkt_hdr(skb, off, 40);
	if (!ip)
		return DROP_MALFORMED;
	if ((ip[0] >> 4) != 6)
		return DROP_MALFORMED;
	__u32 plen = ((__u32)ip[4] << 8) | ip[5];
	__u32 end = ip_end(skb, off, plen ? plen + 40 : 0);
	if (end == 0)
		return DROP_MALFORMED;

	p->family = 6;
	p->saddr[0] = ld64(ip + 8);
	p->saddr[1] = ld64(ip + 16);
	p->daddr[0] = ld64(ip + 24);
	p->daddr[1] = ld64(ip + 32);

	__u8 nh = ip[6];
	off += 40;
#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		const __u8 *h;
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_FRAGMENT)
			break;
		if (off + 8 > end || !(h = pkt_hdr(skb, off, 8)))
			return DROP_MALFORMED;
		if (nh == IPPROTO_FRAGMENT) {
			__u16 fo = ((__u16)h[2] << 8) | h[3];
			p->frag_nh = h[0];
			p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
			if (fo & 0xfff8) {
				p->proto = h[0];
				p->frag = FRAG_LATER;
				return 0;
			}
			if (fo & 1)
				p->frag = FRAG_FIRST;
			/* offset 0 and no more fragments: an atomic fragment, a whole packet */
			off += 8;
		} else {
			off += ((__u32)h[1] + 1) * 8;
		}
		nh = h[0];
	}
	if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	    nh == IPPROTO_FRAGMENT)
		return DROP_MALFORMED; /* more extension headers than IPV6_MAX_EXT */
	p->proto = nh;
	return parse_l4(skb, p, off, end);
}


static __always_inline void count_slot(__u32 slot, __u32 len)
{
	slot += bpf_get_smp_processor_id() * MAX_RULES;
	struct counter *c = bpf_map_lookup_elem(&rule_counters, &slot);
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

/* A flow in canonical order as the five words of its struct ct_key, built in
 * registers: hashing and comparing words just stored as bytes would stall. */
struct flow {
	__u64 w[5];
	int src_is_a; /* the packet's source is side a */
};

/* lt64 is a < b (unsigned) as 0 or 1, ne64 a != b, sel a if m is all ones, b if 0:
 * branch-free, since BPF has no conditional move and flows come in random order. */
static __always_inline __u64 lt64(__u64 a, __u64 b)
{
	return ((~a & b) | ((~a | b) & (a - b))) >> 63;
}

static __always_inline __u64 ne64(__u64 a, __u64 b)
{
	__u64 x = a ^ b;
	return (x | -x) >> 63;
}

static __always_inline __u64 sel(__u64 m, __u64 a, __u64 b)
{
	return (a & m) | (b & ~m);
}

/* flow_of returns p's flow. Side a is the side whose address, then port, is the
 * smaller (as words). */
static __always_inline void flow_of(struct flow *f, const struct pkt *p)
{
	__u64 s0 = p->saddr[0], s1 = p->saddr[1], d0 = p->daddr[0], d1 = p->daddr[1];
	__u64 sp = bpf_ntohs(p->sport), dp = bpf_ntohs(p->dport);
	__u64 ne0 = ne64(s0, d0), first;
	if (p->family == 4) {
		first = (ne0 & lt64(s0, d0)) | ((ne0 ^ 1) & (lt64(dp, sp) ^ 1));
	} else {
		__u64 ne1 = ne64(s1, d1);
		first = (ne0 & lt64(s0, d0)) | ((ne0 ^ 1) & ((ne1 & lt64(s1, d1)) | ((ne1 ^ 1) & (lt64(dp, sp) ^ 1))));
	}
	__u64 m = -first;
	__u64 ports = sel(m, (__u64)p->sport | (__u64)p->dport << 16, (__u64)p->dport | (__u64)p->sport << 16);
	f->w[0] = p->family | (__u64)p->proto << 8 | ports << 16;
	f->w[1] = sel(m, s0, d0);
	f->w[2] = sel(m, s1, d1);
	f->w[3] = sel(m, d0, s0);
	f->w[4] = sel(m, d1, s1);
	f->src_is_a = first;
}

/* flow_hash mixes the words of a flow (IPv4 flows have only three that are not 0). */
static __always_inline __u64 flow_hash(const struct flow *f)
{
	__u64 h = f->w[0] * 0x9e3779b97f4a7c15ULL + f->w[1] * 0xc2b2ae3d27d4eb4fULL +
		  f->w[3] * 0x85ebca77c2b2ae63ULL;
	if ((f->w[0] & 0xff) == 6)
		h += f->w[2] * 0x165667b19e3779f9ULL + f->w[4] * 0x27d4eb2f165667c5ULL;
	return h ^ (h >> 31);
}

/* flow_is reports whether k holds flow f. The first word holds the family, and an
 * IPv4 key's third and fifth words are 0. */
static __always_inline int flow_is(const struct ct_key *k, const struct flow *f)
{
	const __u64 *x = (const __u64 *)k;
	__u64 d = (x[0] ^ f->w[0]) | (x[1] ^ f->w[1]) | (x[3] ^ f->w[3]);
	if ((f->w[0] & 0xff) == 6)
		d |= (x[2] ^ f->w[2]) | (x[4] ^ f->w[4]);
	return d == 0;
}

static __always_inline void flow_key(struct ct_key *k, const struct flow *f)
{
	__u64 *w = (__u64 *)k;
#pragma unroll
	for (int i = 0; i < 5; i++)
		w[i] = f->w[i];
}

/* ct_key_of fills k with p's flow in canonical order and returns whether p's source
 * is side a. */
static __always_inline int ct_key_of(struct ct_key *k, const struct pkt *p)
{
	struct flow f;
	flow_of(&f, p);
	flow_key(k, &f);
	return f.src_is_a;
}

/* now_ns is the time conntrack and fragment entries are stamped with: coarse
 * (jiffies resolution), plenty for timeouts of seconds, and cheaper than reading the
 * clocksource. */
static __always_inline __u64 now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* now_j is jiffies, odd so that it is never 0 (an empty stamp): an inlined read. */
static __always_inline __u32 now_j(void)
{
	return (__u32)bpf_jiffies64() | 1;
}

static __always_inline int ct_live(const struct ct_val *v, __u8 proto, __u64 now)
{
	__u64 timeout = proto == IPPROTO_TCP ? ct_timeout_tcp_ns : ct_timeout_other_ns;
	return now - v->last_seen < timeout;
}


static __always_inline void hint_write(__u32 slot, __u32 nowj)
{
	__u32 *h = bpf_map_lookup_elem(&ct_hint, &slot);
	if (h)
		*h = nowj;
}

/* icmp_related reports whether the ICMP error p carries, in its payload, a packet of
 * a tracked flow that travelled the other way. Embedded IPv6 packets must carry their
 * transport header directly after the IPv6 header. */
static __noinline int icmp_related(struct __sk_buff *skb, const struct pkt *p, __u8 dir)
{
	__u32 zero = 0;
	struct icmp_scratch *s = bpf_map_lookup_elem(&icmp_scratch, &zero);
	if (!s)
		return 0;
	__builtin_memset(s, 0, sizeof(*s));
	struct pkt *e = &s->e;
	const __u8 *ip, *l4;
	__u32 off = p->l4off + 8;
	__u32 l4off;

	e->family = p->family;
	if (p->family == 4) {
		if (!(ip = pkt_hdr(skb, off, 20)))
			return 0;
		__u32 ihl = (ip[0] & 0xf) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20 || (((ip[6] << 8) | ip[7]) & 0x1fff))
			return 0;
		e->proto = ip[9];
		e->saddr[0] = ld32(ip + 12);
		e->daddr[0] = ld32(ip + 16);
		l4off = off + ihl;
	} else {
		if (!(ip = pkt_hdr(skb, off, 40)))
			return 0;
		if ((ip[0] >> 4) != 6)
			return 0;
		e->proto = ip[6];
		e->saddr[0] = ld64(ip + 8);
		e->saddr[1] = ld64(ip + 16);
		e->daddr[0] = ld64(ip + 24);
		e->daddr[1] = ld64(ip + 32);
		l4off = off + 40;
	}
	if (e->proto != IPPROTO_TCP && e->proto != IPPROTO_UDP && !is_icmp(e->family, e->proto))
		return 0;
	if (!(l4 = pkt_hdr(skb, l4off, 8)) || l4_ports(e, l4))
		return 0;

	int src_is_a = ct_key_of(&s->k, e);
	struct ct_val *v = bpf_map_lookup_elem(&conntrack, &s->k);
	if (!v || !ct_live(v, e->proto, now_ns()))
		return 0;
	/* The embedded packet went the other way than the error. If it is the flow's
	 * opening direction, the flow opened in the other direction; if it is a reply,
	 * the flow opened in the error's direction. */
	if (src_is_a == v->src_is_a)
		return v->dir != dir;
	return v->dir == dir;
}

static __always_inline void frag_key_of(struct frag_key *k, const struct pkt *p)
{
	k->family = p->family;
	k->proto = p->frag_nh;
	k->id = p->frag_id;
	__builtin_memcpy(k->saddr, p->saddr, 16);
	__builtin_memcpy(k->daddr, p->daddr, 16);
}

/* admit_first remembers that a first fragment passed, so its later fragments do. */
static __noinline void admit_first(const struct pkt *p, __u32 rule_id, __u32 slot, __u32 has_rule)
{
	struct frag_key k = {};
	struct frag_val v = {.last_seen = now_ns(), .rule_id = rule_id, .slot = slot, .has_rule = has_rule};
	frag_key_of(&k, p);
	bpf_map_update_elem(&frags, &k, &v, BPF_ANY);
}

static __always_inline int later_fragment(struct __sk_buff *skb, const struct pkt *p)
{
	__u64 now = now_ns();
	struct frag_key k = {};
	frag_key_of(&k, p);
	struct frag_val *v = bpf_map_lookup_elem(&frags, &k);
	if (!v || now - v->last_seen >= frag_timeout_ns)
		return drop(skb, DROP_FRAGMENT);
	v->last_seen = now;
	if (v->has_rule) {
		/* The slot still counts the rule unless a new policy dropped it. */
		__u32 slot = v->slot;
		struct rule_slot *rs = bpf_map_lookup_elem(&rule_slots, &slot);
		if (rs && rs->used && rs->rule_id == v->rule_id)
			count_slot(slot, skb->len);
	}
	return pass(skb, PASS_FRAGMENT);
}

/* The rule that decides a packet. */
struct verdict_of {
	__u32 rule_id;
	__u32 slot;
	__u32 verdict;
};

#define NO_HIT 0xffffffff

/* pfx4_find looks addr up in the IPv4 prefix table, longest prefix first. It returns
 * the identity index, or NO_HIT. The bucket's slots are all compared, without
 * early exits, so that the verifier meets one state per length, not one per slot. */
static __always_inline __u32 pfx4_find(const struct gen_meta *m, __u32 base, __u32 addr)
{
	__u32 n = m->nlen4, found = NO_HIT;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < PFX_LENS; i++) {
		if (i >= n)
			break;
		__u32 len = m->len4[i];
		__u32 a = addr & m->m4[i];
		__u64 want = (__u64)a | ((__u64)(len + 1) << 32);
		__u32 k = base + (__u32)(((((__u64)a << 8) | len) * m->mul4) >> (m->shift4 & 63));
		struct pfx4_bucket *b = bpf_map_lookup_elem(&pfx4, &k);
		if (!b)
			break;
#pragma unroll
		for (__u32 j = 0; j < PFX_BUCKET; j++) {
			__u64 v = b->s[j];
			if ((v & 0xffffffffffULL) == want) {
				found = v >> 40;
				break;
			}
			if (!v)
				break; /* the loader fills a bucket's slots in order */
		}
		if (found != NO_HIT)
			break;
	}
	return found;
}

static __always_inline __u32 pfx6_find(const struct gen_meta *m, __u32 base, __u64 a0, __u64 a1)
{
	__u32 n = m->nlen6, found = NO_HIT;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < PFX_LENS; i++) {
		if (i >= n)
			break;
		__u32 len = m->len6[i];
		__u64 b0 = a0 & m->m6[i][0], b1 = a1 & m->m6[i][1];
		__u32 k = base + (__u32)((b0 * m->mul6[0] + b1 * m->mul6[1] + len * m->mul6[2]) >> (m->shift6 & 63));
		struct pfx6_bucket *b = bpf_map_lookup_elem(&pfx6, &k);
		if (!b)
			break;
#pragma unroll
		for (__u32 j = 0; j < PFX_BUCKET; j++) {
			if (b->s[j].a0 == b0 && b->s[j].a1 == b1 && b->s[j].len1 == len + 1) {
				found = b->s[j].index;
				break;
			}
			if (!b->s[j].len1)
				break;
		}
		if (found != NO_HIT)
			break;
	}
	return found;
}

/* The question trie_find answers: the remote as a key of its family's trie. */
struct trie_q {
	__u32 gen;
	enum sizes family; /* 4 or 6; typed so that BTF, and so Go, has enum sizes */
	struct lpm4_key k4;
	struct lpm6_key k6;
};

/* trie_find looks the remote up in its family's identity trie: the prefixes of
 * lengths the hash table does not hold. A subprogram on the rarer path, whose
 * signature also puts the tries' key types into BTF in full: clang describes types
 * that only inner map definitions name as forward declarations, which loaders
 * cannot size. */
static __noinline __u32 trie_find(struct trie_q *q)
{
	__u32 gen = q->gen;
	__u32 *v;
	if (q->family == 4) {
		void *ids = bpf_map_lookup_elem(&id4_gens, &gen);
		if (!ids)
			return NO_HIT;
		v = bpf_map_lookup_elem(ids, &q->k4);
	} else {
		void *ids = bpf_map_lookup_elem(&id6_gens, &gen);
		if (!ids)
			return NO_HIT;
		v = bpf_map_lookup_elem(ids, &q->k6);
	}
	return v ? *v : NO_HIT;
}

/* trie_rule finds port in the rule trie, for a group too large for ranges. */
static __noinline int trie_rule(struct rule_key *rk, struct rule_val *out, __u32 gen)
{
	void *rules = bpf_map_lookup_elem(&rule_gens, &gen);
	if (!rules)
		return 0;
	struct rule_val *rv = bpf_map_lookup_elem(rules, rk);
	if (!rv)
		return 0;
	*out = *rv;
	return 1;
}

/* match_group finds port among the ranges of group grp of identity iv. It returns 1
 * with *out set if a range matches. */
static __always_inline int match_group(__u32 grp, const struct ident_val *iv, __u8 dir, __u8 proto,
				       __u16 port, __u32 gen, struct verdict_of *out)
{
	__u32 n = grp >> 24, first = gen * MAX_RANGES + (grp & 0xffffff);
	if (n == GROUP_IN_TRIE) {
		struct rule_key rk = {.prefixlen = 64, .identity = bpf_htonl(iv->identity), .dir = dir,
				      .proto = proto, .port = bpf_htons(port)};
		struct rule_val rv;
		if (!trie_rule(&rk, &rv, gen))
			return 0;
		out->rule_id = rv.rule_id;
		out->slot = rv.slot;
		out->verdict = rv.verdict;
		return 1;
	}
	/* The last range that starts at or below port, by binary search (at most four
	 * probes for GROUP_RANGES ranges): the cost does not grow with the group. */
	if (n == 0 || n > GROUP_RANGES)
		return 0;
	__u32 base = first;
#pragma unroll
	for (__u32 step = 0; step < 4; step++) {
		__u32 half = n / 2;
		if (half == 0)
			break;
		__u32 idx = base + half;
		struct port_range *r = bpf_map_lookup_elem(&ranges, &idx);
		if (r && r->lo <= port)
			base = idx;
		n -= half;
	}
	struct port_range *r = bpf_map_lookup_elem(&ranges, &base);
	if (!r || port < r->lo || port > r->hi)
		return 0;
	out->rule_id = r->rule_id;
	out->slot = r->slot;
	out->verdict = r->verdict;
	return 1;
}

static __always_inline __u32 proto_index(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 0;
	case IPPROTO_UDP:
		return 1;
	case IPPROTO_ICMP:
		return 2;
	}
	return 3; /* ICMPv6: parsing let nothing else through */
}

/* The result of rule_for: found, verdict, counter slot, rule id; or no policy. */
#define RULE_FOUND (1ULL << 63)
#define RULE_NO_POLICY (1ULL << 62)
#define RULE_ACCEPT (1ULL << 48)

/* The question to rule_for: the remote's family, the direction, protocol and port. */
#define Q_PORT(q) ((q) & 0xffff)
#define Q_PROTO(q) (((q) >> 16) & 0xff)
#define Q_DIR(q) (((q) >> 24) & 1)
#define Q_V6(q) (((q) >> 25) & 1)

/* rule_for finds the rule entry for a packet in the active generation: the remote
 * address (a0: an IPv4 address, or the first half of an IPv6 one; a1 the second
 * half) and the question q. It returns RULE_FOUND | verdict | slot << 32 | rule id,
 * 0 for no rule, or RULE_NO_POLICY. Inlined: a call of a subprogram costs more than
 * all its lookups. */
static __always_inline __u64 rule_for(__u64 a0, __u64 a1, __u32 q)
{
	__u32 zero = 0;
	struct policy_state *st = bpf_map_lookup_elem(&policy_state, &zero);
	if (!st)
		return RULE_NO_POLICY;
	__u32 gen = st->active & 1; /* the one read of the selector */
	struct gen_meta *m = bpf_map_lookup_elem(&meta, &gen);
	if (!m)
		return RULE_NO_POLICY;

	__u32 index;
	if (!Q_V6(q)) {
		index = pfx4_find(m, gen * PFX4_BUCKETS, (__u32)a0);
		if (index == NO_HIT && m->trie4) {
			struct trie_q tq = {.gen = gen, .family = 4, .k4.prefixlen = 32};
			__builtin_memcpy(tq.k4.addr, &a0, 4);
			index = trie_find(&tq);
		}
	} else {
		index = pfx6_find(m, gen * PFX6_BUCKETS, a0, a1);
		if (index == NO_HIT && m->trie6) {
			struct trie_q tq = {.gen = gen, .family = 6, .k6.prefixlen = 128};
			__builtin_memcpy(tq.k6.addr, &a0, 8);
			__builtin_memcpy(tq.k6.addr + 8, &a1, 8);
			index = trie_find(&tq);
		}
	}
	if (index == NO_HIT)
		index = m->world;

	__u8 dir = Q_DIR(q), proto = Q_PROTO(q);
	__u16 port = Q_PORT(q);
	__u32 pi = proto_index(proto);
	struct verdict_of v;
	index += gen * MAX_IDENTS;
	struct ident_val *iv = bpf_map_lookup_elem(&idents, &index);
	if (iv) {
		__u32 grp = iv->grp[dir & 1][pi & 3];
		if (grp && match_group(grp, iv, dir, proto, port, gen, &v))
			goto found;
	}
	index = gen * MAX_IDENTS + m->any;
	iv = bpf_map_lookup_elem(&idents, &index);
	if (iv) {
		__u32 grp = iv->grp[dir & 1][pi & 3];
		if (grp && match_group(grp, iv, dir, proto, port, gen, &v))
			goto found;
	}
	return 0;
found:
	return RULE_FOUND | (v.verdict == VERDICT_ACCEPT ? RULE_ACCEPT : 0) | ((__u64)(v.slot & 0xffff) << 32) | v.rule_id;
}

/* What conntrack says about a packet's flow. */
#define FLOW_NONE 0    /* no live entry */
#define FLOW_FORWARD 1 /* same direction and side as the opening packet */
#define FLOW_REPLY 2   /* the other direction and side */
#define FLOW_OTHER 3   /* a live entry, neither */

static __always_inline int flow_state(__u8 odir, __u8 osrc, __u8 dir, int src_is_a)
{
	if (odir != dir && osrc != src_is_a)
		return FLOW_REPLY;
	if (odir == dir && osrc == src_is_a)
		return FLOW_FORWARD;
	return FLOW_OTHER;
}

/* decide judges a parsed, unfragmented or first-fragment packet: a conntrack reply
 * passes; otherwise the active generation's rules decide, and an accepted packet opens
 * or refreshes its flow.
 *
 * The flow is not tracked if the hint rules it out. Else its state comes from the
 * flow cache if this CPU found the flow live in conntrack less than FLOW_WINDOW_J
 * ago (a live entry stays live that long: its timeout is longer, see
 * FLOW_WINDOW_J), else from conntrack. */
static __always_inline int decide(struct __sk_buff *skb, struct pkt *p, __u8 dir)
{
	/* The rule first, although a reply does not need it: finding it has no side
	 * effects, and the verifier checks it once rather than once for every state of
	 * the flow below. */
	const __u64 *remote = dir == DIR_INGRESS ? p->saddr : p->daddr;
	__u32 q = p->rule_port | (__u32)p->proto << 16 | (__u32)dir << 24 | (__u32)(p->family == 6) << 25;
	__u64 r = rule_for(remote[0], remote[1], q);

	struct flow f;
	flow_of(&f, p);
	__u64 h = flow_hash(&f);
	__u32 nowj = now_j();
	__u32 hslot = (h >> 16) & (HINT_SLOTS - 1);
	__u32 fslot = (h >> (64 - 10)) + bpf_get_smp_processor_id() * FLOW_SLOTS;
	int use_cache = flow_cache_on;
	struct flow_slot *fs = NULL;
	struct ct_val *cv = NULL;
	struct ct_key ck;
	__u64 now = 0;
	int state = FLOW_NONE, cached = 0;

	/* The hint first: a flow it rules out has no live entry, so this CPU's cache
	 * cannot vouch for it either, and an unsolicited packet touches one cache
	 * line here. */
	__u32 *hint = bpf_map_lookup_elem(&ct_hint, &hslot);
	if (hint && *hint && nowj - *hint < hint_window_j) {
		if (use_cache)
			fs = bpf_map_lookup_elem(&flow_cache, &fslot);
		if (fs && fs->stamp && nowj - fs->stamp < FLOW_WINDOW_J && flow_is(&fs->k, &f)) {
			cached = 1;
			state = flow_state(fs->dir, fs->src_is_a, dir, f.src_is_a);
		} else {
			flow_key(&ck, &f);
			cv = bpf_map_lookup_elem(&conntrack, &ck);
		}
		if (cv) {
			now = now_ns();
			if (ct_live(cv, p->proto, now)) {
				state = flow_state(cv->dir, cv->src_is_a, dir, f.src_is_a);
				if (fs) {
					flow_key(&fs->k, &f);
					fs->stamp = nowj;
					fs->dir = cv->dir;
					fs->src_is_a = cv->src_is_a;
				}
			}
		}
	}

	if (state == FLOW_REPLY) {
		if (!cached && now - cv->last_seen > CT_REFRESH_NS) {
			cv->last_seen = now;
			hint_write(hslot, nowj);
		}
		if (p->frag == FRAG_FIRST)
			admit_first(p, 0, 0, 0);
		return pass(skb, PASS_REPLY);
	}

	if (r & RULE_NO_POLICY)
		return drop(skb, DROP_NO_POLICY);
	if (!(r & RULE_FOUND))
		return drop(skb, DROP_NO_RULE);
	__u32 rule_id = (__u32)r, slot = (r >> 32) & 0xffff;
	count_slot(slot, skb->len);
	if (!(r & RULE_ACCEPT))
		return drop(skb, DROP_DENY_RULE);

	if (state == FLOW_FORWARD) {
		if (!cached && now - cv->last_seen > CT_REFRESH_NS) {
			cv->last_seen = now;
			hint_write(hslot, nowj);
		}
	} else if (state == FLOW_NONE) {
		if (!now)
			now = now_ns();
		struct ct_val nv = {.last_seen = now, .dir = dir, .src_is_a = f.src_is_a};
		/* The hint first: a CPU that sees the entry sees the hint. */
		hint_write(hslot, nowj);
		flow_key(&ck, &f);
		if (use_cache && !fs)
			fs = bpf_map_lookup_elem(&flow_cache, &fslot);
		if (bpf_map_update_elem(&conntrack, &ck, &nv, BPF_ANY) == 0 && fs) {
			flow_key(&fs->k, &f);
			fs->stamp = nowj;
			fs->dir = dir;
			fs->src_is_a = f.src_is_a;
		}
	}
	if (p->frag == FRAG_FIRST)
		admit_first(p, rule_id, slot, 1);
	return pass(skb, PASS_RULE);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	__u32 off = l2_len;
	__be16 l3;

	/* Make the headers linear if they are not (rare: GRO and TUN keep them so). */
	__u32 want = skb->len < PULL_LEN ? skb->len : PULL_LEN;
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, want);

	if (off) {
		const __u8 *eth = pkt_hdr(skb, 12, 2);
		if (!eth)
			return drop(skb, DROP_MALFORMED);
		__builtin_memcpy(&l3, eth, 2);
	} else {
		l3 = skb->protocol;
	}

	struct pkt p = {};
	int reason;
	if (l3 == bpf_htons(ETH_P_IP))
		reason = parse_v4(skb, &p, off);
	else if (l3 == bpf_htons(ETH_P_IPV6))
		reason = parse_v6(skb, &p, off);
	else if (off && l3 == bpf_htons(ETH_P_ARP))
		return pass(skb, PASS_L2);
	else
		return drop(skb, DROP_UNSUPPORTED_L3);
	if (reason)
		return drop(skb, reason);

	if (p.frag == FRAG_LATER)
		return later_fragment(skb, &p);

	if (is_icmp(p.family, p.proto)) {
		/* Neighbour discovery (router/neighbour solicitation and advertisement,
		 * redirect) is link plumbing on Ethernet; L3 devices never see it. */
		if (off && p.family == 6 && p.icmp_type >= 133 && p.icmp_type <= 137)
			return pass(skb, PASS_L2);
		if (icmp_is_error(p.family, p.icmp_type) && icmp_related(skb, &p, dir)) {
			if (p.frag == FRAG_FIRST)
				admit_first(&p, 0, 0, 0);
			return pass(skb, PASS_RELATED);
		}
	}

	return decide(skb, &p, dir);
}

SEC("tc")
int cvlan_ingress(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}

SEC("tc")
int cvlan_egress(struct __sk_buff *skb)
{
	return handle(skb, DIR_EGRESS);
}

char __license[] SEC("license") = "GPL";
