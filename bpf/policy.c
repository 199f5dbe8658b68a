// SPDX-License-Identifier: GPL-2.0
/*
 * policy.c enforces one node's compiled policy (policy.NodePolicy) on the node's
 * overlay interface: cvlan_ingress runs on packets arriving from the overlay,
 * cvlan_egress on packets leaving into it. datapath/bpfpolicy loads these programs and
 * fills their maps; its package doc describes the behaviour in prose.
 *
 * Per packet: parse (IPv4/IPv6, TCP/UDP/ICMP/ICMPv6) -> related ICMP error or
 * conntrack reply? pass -> identity of the remote address (host hash, then LPM
 * tries; miss = world 0) -> rule (the port ranges of identity, direction and
 * protocol, by hash; the remote's identity first, then IdentityAny) -> accept:
 * conntrack entry, per-rule counter, pass; deny or no rule: drop counted by reason.
 *
 * The host hash, the identity tries, the group hash and the rule trie (for groups
 * with many ranges) exist in two generations (slots of ARRAY_OF_MAPS maps);
 * policy_state.active, read once per packet, selects one. The loader fills the
 * inactive slot and flips active with one map update.
 */
#include "policy.h"

#define IPV6_MAX_EXT 6
/* Headers are read in place. If they are not in the skb's linear data, the first
 * PULL_LEN bytes are made linear; headers beyond those are treated as missing. */
#define PULL_LEN 256
#define MAX_HDR_OFF 0x3fff
#define CT_REFRESH_NS 1000000000ULL

#define FRAG_NONE 0
#define FRAG_FIRST 1
#define FRAG_LATER 2

/* What parsing learnt about a packet. */
struct pkt {
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
	__u8 saddr[16];
	__u8 daddr[16];
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

static __always_inline void count_rule(__u32 rule_id, __u32 len)
{
	struct counter *c = bpf_map_lookup_elem(&rule_counters, &rule_id);
	if (!c) {
		/* The loader creates an entry per rule of the policy; this covers a
		 * counter map that was cleared behind its back. */
		struct counter zero = {};
		bpf_map_update_elem(&rule_counters, &rule_id, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&rule_counters, &rule_id);
		if (!c)
			return;
	}
	c->packets++;
	c->bytes += len;
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
	__builtin_memcpy(p->saddr, ip + 12, 4);
	__builtin_memcpy(p->daddr, ip + 16, 4);

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
	__builtin_memcpy(p->saddr, ip + 8, 16);
	__builtin_memcpy(p->daddr, ip + 24, 16);

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

/* ct_key_of fills k with p's flow in canonical order and returns whether p's source
 * is side a. */
static __always_inline int ct_key_of(struct ct_key *k, const struct pkt *p)
{
	int src_first = 0;
	int i;

#pragma unroll
	for (i = 0; i < 16; i++) {
		if (p->saddr[i] != p->daddr[i]) {
			src_first = p->saddr[i] < p->daddr[i];
			break;
		}
	}
	if (i == 16)
		src_first = bpf_ntohs(p->sport) <= bpf_ntohs(p->dport);

	k->family = p->family;
	k->proto = p->proto;
	if (src_first) {
		k->port_a = p->sport;
		k->port_b = p->dport;
		__builtin_memcpy(k->addr_a, p->saddr, 16);
		__builtin_memcpy(k->addr_b, p->daddr, 16);
	} else {
		k->port_a = p->dport;
		k->port_b = p->sport;
		__builtin_memcpy(k->addr_a, p->daddr, 16);
		__builtin_memcpy(k->addr_b, p->saddr, 16);
	}
	return src_first;
}

/* now_ns is the time conntrack and fragment entries are stamped with: coarse
 * (jiffies resolution), plenty for timeouts of seconds, and cheaper than reading the
 * clocksource. */
static __always_inline __u64 now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline int ct_live(const struct ct_val *v, __u8 proto, __u64 now)
{
	__u64 timeout = proto == IPPROTO_TCP ? ct_timeout_tcp_ns : ct_timeout_other_ns;
	return now - v->last_seen < timeout;
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
		__builtin_memcpy(e->saddr, ip + 12, 4);
		__builtin_memcpy(e->daddr, ip + 16, 4);
		l4off = off + ihl;
	} else {
		if (!(ip = pkt_hdr(skb, off, 40)))
			return 0;
		if ((ip[0] >> 4) != 6)
			return 0;
		e->proto = ip[6];
		__builtin_memcpy(e->saddr, ip + 8, 16);
		__builtin_memcpy(e->daddr, ip + 24, 16);
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
static __always_inline void admit_first(const struct pkt *p, __u64 now, __u32 rule_id, __u8 has_rule)
{
	if (p->frag != FRAG_FIRST)
		return;
	struct frag_key k = {};
	struct frag_val v = {.last_seen = now, .rule_id = rule_id, .has_rule = has_rule};
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
	if (v->has_rule)
		count_rule(v->rule_id, skb->len);
	return pass(skb, PASS_FRAGMENT);
}

/* The keys and result of the lookups of one packet. */
struct lookup {
	struct host_key hk;
	struct lpm4_key k4;
	struct lpm6_key k6;
	struct group_key gk;
	struct rule_key rk;
	struct rule_val rv;
	__u16 port; /* destination port, host byte order; 0 for ICMP */
};

/* match_ranges finds l->port among the ranges of group g (of identity), or, for a
 * group too large for the hash, in the rule trie. It returns 1 with l->rv set if a
 * range matches. */
static __always_inline int match_ranges(const struct group_val *g, void *rules, struct lookup *l,
					__u32 identity)
{
	__u32 n = g->n;
	if (n == GROUP_IN_TRIE) {
		l->rk.identity = bpf_htonl(identity);
		struct rule_val *rv = bpf_map_lookup_elem(rules, &l->rk);
		if (!rv)
			return 0;
		l->rv = *rv;
		return 1;
	}
	__u16 port = l->port;
	for (int i = 0; i < GROUP_RANGES; i++) {
		if (i >= n || port < g->r[i].lo)
			return 0;
		if (port <= g->r[i].hi) {
			l->rv.rule_id = g->r[i].rule_id;
			l->rv.verdict = g->r[i].verdict;
			return 1;
		}
	}
	return 0;
}

/* rule_any is match_ranges for IdentityAny's group, the fallback after a miss. A
 * subprogram of its own, on the rarer path, because its signature is what puts
 * struct lookup, struct group_val and the key types into BTF in full: clang describes
 * types that only inner map definitions name as forward declarations, which loaders
 * cannot size. */
static __noinline int rule_any(const struct group_val *g, void *rules, struct lookup *l)
{
	return match_ranges(g, rules, l, IDENTITY_ANY);
}

/* lookup_rule finds the rule entry for p in the active generation. It returns
 * DROP_REASON_MAX with l->rv set, or a drop reason. */
static __always_inline int lookup_rule(const struct pkt *p, __u8 dir, struct lookup *l)
{
	__u32 zero = 0;
	struct policy_state *st = bpf_map_lookup_elem(&policy_state, &zero);
	if (!st)
		return DROP_NO_POLICY;
	__u32 gen = st->active & 1; /* the one read of the selector */
	void *hosts = bpf_map_lookup_elem(&host_gens, &gen);
	void *ids = bpf_map_lookup_elem(p->family == 4 ? (void *)&id4_gens : (void *)&id6_gens, &gen);
	void *groups = bpf_map_lookup_elem(&group_gens, &gen);
	void *rules = bpf_map_lookup_elem(&rule_gens, &gen);
	if (!hosts || !ids || !groups || !rules)
		return DROP_NO_POLICY;

	/* A host prefix is the longest there is, so a hit in the host hash is the
	 * answer; the tries hold only the shorter prefixes. */
	const __u8 *remote = dir == DIR_INGRESS ? p->saddr : p->daddr;
	__u32 identity = IDENTITY_WORLD;
	l->hk.family = p->family;
	__builtin_memcpy(l->hk.addr, remote, 16);
	__u32 *idv = bpf_map_lookup_elem(hosts, &l->hk);
	if (!idv) {
		if (p->family == 4) {
			l->k4.prefixlen = 32;
			__builtin_memcpy(l->k4.addr, remote, 4);
			idv = bpf_map_lookup_elem(ids, &l->k4);
		} else {
			l->k6.prefixlen = 128;
			__builtin_memcpy(l->k6.addr, remote, 16);
			idv = bpf_map_lookup_elem(ids, &l->k6);
		}
	}
	if (idv)
		identity = *idv;

	l->port = p->rule_port;
	l->gk.dir = dir;
	l->gk.proto = p->proto;
	l->rk.prefixlen = 64;
	l->rk.dir = dir;
	l->rk.proto = p->proto;
	l->rk.port = bpf_htons(p->rule_port);
	l->gk.identity = identity;
	struct group_val *g = bpf_map_lookup_elem(groups, &l->gk);
	if (g && match_ranges(g, rules, l, identity))
		return DROP_REASON_MAX;
	l->gk.identity = IDENTITY_ANY;
	g = bpf_map_lookup_elem(groups, &l->gk);
	if (g && rule_any(g, rules, l))
		return DROP_REASON_MAX;
	return DROP_NO_RULE;
}

/* decide judges a parsed, unfragmented or first-fragment packet: a conntrack reply
 * passes; otherwise the active generation's rules decide, and an accepted packet opens
 * or refreshes its flow. */
static __always_inline int decide(struct __sk_buff *skb, struct pkt *p, __u8 dir)
{
	struct ct_key ck = {};
	int src_is_a = ct_key_of(&ck, p);
	struct ct_val *cv = bpf_map_lookup_elem(&conntrack, &ck);
	__u64 now = 0;
	int live = 0;
	if (cv) {
		now = now_ns();
		live = ct_live(cv, p->proto, now);
	}
	if (live && cv->dir != dir && cv->src_is_a != src_is_a) {
		if (now - cv->last_seen > CT_REFRESH_NS)
			cv->last_seen = now;
		admit_first(p, now, 0, 0);
		return pass(skb, PASS_REPLY);
	}

	struct lookup l = {};
	int reason = lookup_rule(p, dir, &l);
	if (reason != DROP_REASON_MAX)
		return drop(skb, reason);
	count_rule(l.rv.rule_id, skb->len);
	if (l.rv.verdict != VERDICT_ACCEPT)
		return drop(skb, DROP_DENY_RULE);
	if (!now)
		now = now_ns();

	if (live && cv->dir == dir && cv->src_is_a == src_is_a) {
		if (now - cv->last_seen > CT_REFRESH_NS)
			cv->last_seen = now;
	} else if (!live) {
		struct ct_val nv = {.last_seen = now, .dir = dir, .src_is_a = src_is_a};
		bpf_map_update_elem(&conntrack, &ck, &nv, BPF_ANY);
	}
	admit_first(p, now, l.rv.rule_id, 1);
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
			admit_first(&p, now_ns(), 0, 0);
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
