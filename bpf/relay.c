// SPDX-License-Identifier: GPL-2.0
/*
 * relay.c: the UDP relay's XDP fast path (loaded by datapath/relay/xdprelay).
 *
 * A relay session joins two peers A and B through two UDP ports of the relay. Once the
 * Go control path has authenticated both sides' bind packets, it writes two entries
 * into the sessions map, one per direction:
 *
 *   (A's address, A's port, port_a) -> send from (relay, port_b) to (B's address, B's port)
 *   (B's address, B's port, port_b) -> send from (relay, port_a) to (A's address, A's port)
 *
 * This program looks every IPv4/UDP packet up by (source address, source port,
 * destination port), rewrites the Ethernet, IPv4 and UDP headers from the entry,
 * computes both checksums from scratch and sends the packet on: XDP_TX when the other
 * side is reached through the interface the packet came in on, bpf_redirect to the
 * entry's interface otherwise. Everything it does not relay goes to the stack with
 * XDP_PASS: other traffic, bind packets (the Go control path must see them, also from
 * sources that are already bound), packets of unknown sessions, malformed or
 * oversized ones. It never drops a packet.
 *
 * Checksums: the UDP checksum is recomputed in full, over the pseudo-header, the UDP
 * header and the payload. The incoming checksum is never trusted or updated
 * incrementally: a sender on a veth (or any local sender) emits CHECKSUM_PARTIAL
 * packets whose checksum field holds only the pseudo-header sum, and native XDP sees
 * the raw bytes, so it cannot tell a partial checksum from a complete one.
 *
 * Egress: bind packets also record, in bind_paths, the interface they came in on, the
 * frame's source MAC (the next hop toward that peer) and destination MAC (ours) and
 * the destination address (the relay address that peer uses). The Go side copies that
 * reverse path into the entries it writes, so no FIB lookup (and no forwarding
 * sysctl) is needed.
 *
 * IPv6 is not handled here: IPv6 packets pass to the stack and the Go path relays
 * them. Addresses in the maps are 16 bytes (IPv4-mapped IPv6 for IPv4) so that the
 * layout does not change if this program learns IPv6.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define RELAY_TTL 64

/* UDP datagrams longer than this (header included) go to the Go path: the checksum
 * loops below cover at most this many bytes. Native XDP frames without multi-buffer
 * support are at most a page anyway (about 3.5 KiB of it usable). */
#define MAX_UDP_LEN 3072

/* The first four bytes of every bind packet ("cvRB"), as they sit in memory. A
 * WireGuard message starts with its type (1..4) as a little-endian u32, so no
 * WireGuard packet starts with these bytes. Must equal session.Magic in Go. */
#define BIND_MAGIC0 'c'
#define BIND_MAGIC1 'v'
#define BIND_MAGIC2 'R'
#define BIND_MAGIC3 'B'

/* session_key identifies one direction of a session: who sent the packet and to
 * which session port. Addresses are IPv4-mapped IPv6, ports in network byte order. */
struct session_key {
	__u8 addr[16];
	__be16 sport;
	__be16 dport;
};

/* session_value says how to rewrite a packet that matches its key, and counts what
 * it relayed. The Go side writes the rewrite fields; this program only adds to the
 * counters. */
struct session_value {
	__u8 saddr[16];  /* new source: the relay address the other side sends to */
	__u8 daddr[16];  /* new destination: the other side's learned address */
	__be16 sport;    /* new source port: the other side's session port */
	__be16 dport;    /* new destination port: the other side's learned port */
	__u32 ifindex;   /* egress interface; XDP_TX when it is the ingress one */
	__u8 smac[6];    /* new Ethernet source: our MAC on ifindex */
	__u8 dmac[6];    /* new Ethernet destination: next hop toward the other side */
	__u32 pad;
	__u64 packets;   /* relayed packets */
	__u64 bytes;     /* relayed UDP payload bytes */
	__u64 last_seen; /* bpf_ktime_get_coarse_ns() of the last relayed packet */
};

/* bind_path is the reverse path of the last bind packet from a session_key. */
struct bind_path {
	__u8 local[16];     /* the bind's destination: the relay address the peer uses */
	__u32 ifindex;      /* the interface it came in on */
	__u8 peer_mac[6];   /* the frame's source: the next hop toward the peer */
	__u8 local_mac[6];  /* the frame's destination: our MAC on ifindex */
	__u32 pad;
};

/* stat indexes the stats array. Go names them in xdprelay.statNames; a test checks
 * that STAT_MAX matches. */
enum stat {
	STAT_TX_PACKETS,        /* relayed with XDP_TX */
	STAT_TX_BYTES,          /* their UDP payload bytes */
	STAT_REDIRECT_PACKETS,  /* relayed with bpf_redirect to another interface */
	STAT_REDIRECT_BYTES,    /* their UDP payload bytes */
	STAT_PASS_OTHER,        /* not IPv4/UDP, IP options, fragments: not ours */
	STAT_PASS_MALFORMED,    /* IPv4/UDP whose lengths disagree with the frame */
	STAT_PASS_BIND,         /* bind packets, for the Go control path */
	STAT_PASS_NO_SESSION,   /* no entry for (source, source port, destination port) */
	STAT_PASS_TOO_BIG,      /* UDP datagram longer than MAX_UDP_LEN */
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* set from Go before loading */
	__type(key, struct session_key);
	__type(value, struct session_value);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct session_key);
	__type(value, struct bind_path);
} bind_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, enum stat);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(enum stat s, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &s);
	if (v)
		*v += n;
}

static __always_inline int pass(enum stat s)
{
	count(s, 1);
	return XDP_PASS;
}

/* fold reduces a 64-bit one's complement sum to 16 bits. */
static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* sum_to_end adds the bytes from p to data_end to sum, as 16-bit words in memory
 * order (the sum's byte order does not matter as long as it is the same everywhere;
 * an odd last byte is padded with a zero byte). The loops are bounded by MAX_UDP_LEN;
 * the caller has checked that data_end - p <= MAX_UDP_LEN. */
static __always_inline __u64 sum_to_end(__u64 sum, void *p, void *data_end)
{
	for (int i = 0; i < MAX_UDP_LEN / 256; i++) {
		if (p + 256 > data_end)
			break;
		sum += (__u32)bpf_csum_diff(0, 0, p, 256, 0);
		p += 256;
	}
	for (int i = 0; i < 256 / 64; i++) {
		if (p + 64 > data_end)
			break;
		sum += (__u32)bpf_csum_diff(0, 0, p, 64, 0);
		p += 64;
	}
	for (int i = 0; i < 64 / 4; i++) {
		if (p + 4 > data_end)
			break;
		sum += *(__u32 *)p;
		p += 4;
	}
	if (p + 2 <= data_end) {
		sum += *(__u16 *)p;
		p += 2;
	}
	if (p + 1 <= data_end)
		sum += *(__u8 *)p;
	return sum;
}

static __always_inline void map4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

static __always_inline int is_bind(void *payload, void *data_end)
{
	__u8 *b = payload;
	if ((void *)(b + 4) > data_end)
		return 0;
	return b[0] == BIND_MAGIC0 && b[1] == BIND_MAGIC1 && b[2] == BIND_MAGIC2 &&
	       b[3] == BIND_MAGIC3;
}

SEC("xdp")
int relay_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return pass(STAT_PASS_OTHER);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return pass(STAT_PASS_OTHER);
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0)
		return pass(STAT_PASS_OTHER);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > data_end)
		return pass(STAT_PASS_MALFORMED);
	/* Lengths must agree with the frame: the checksum covers data_end - udp bytes. */
	__u32 ip_len = bpf_ntohs(ip->tot_len);
	__u32 udp_len = bpf_ntohs(udp->len);
	if (ip_len != (__u32)(data_end - (void *)ip) || udp_len != ip_len - sizeof(*ip))
		return pass(STAT_PASS_MALFORMED);

	struct session_key key = {.sport = udp->source, .dport = udp->dest};
	map4(key.addr, ip->saddr);

	if (is_bind(udp + 1, data_end)) {
		struct bind_path path = {.ifindex = ctx->ingress_ifindex};
		map4(path.local, ip->daddr);
		__builtin_memcpy(path.peer_mac, eth->h_source, ETH_ALEN);
		__builtin_memcpy(path.local_mac, eth->h_dest, ETH_ALEN);
		bpf_map_update_elem(&bind_paths, &key, &path, BPF_ANY);
		return pass(STAT_PASS_BIND);
	}

	struct session_value *v = bpf_map_lookup_elem(&sessions, &key);
	if (!v)
		return pass(STAT_PASS_NO_SESSION);
	if (udp_len > MAX_UDP_LEN)
		return pass(STAT_PASS_TOO_BIG);

	__builtin_memcpy(eth->h_dest, v->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, v->smac, ETH_ALEN);

	__be32 saddr, daddr;
	__builtin_memcpy(&saddr, v->saddr + 12, 4);
	__builtin_memcpy(&daddr, v->daddr + 12, 4);
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->ttl = RELAY_TTL;
	ip->check = 0;
	ip->check = ~fold((__u32)bpf_csum_diff(0, 0, (void *)ip, sizeof(*ip), 0));

	udp->source = v->sport;
	udp->dest = v->dport;
	udp->check = 0;
	__u64 sum = (__u64)saddr + daddr + bpf_htons(IPPROTO_UDP) + udp->len;
	sum = sum_to_end(sum, udp, data_end);
	__u16 csum = ~fold(sum);
	udp->check = csum ? csum : 0xffff;

	__u64 payload = udp_len - sizeof(*udp);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, payload);
	v->last_seen = bpf_ktime_get_coarse_ns();

	if (v->ifindex == ctx->ingress_ifindex) {
		count(STAT_TX_PACKETS, 1);
		count(STAT_TX_BYTES, payload);
		return XDP_TX;
	}
	count(STAT_REDIRECT_PACKETS, 1);
	count(STAT_REDIRECT_BYTES, payload);
	return bpf_redirect(v->ifindex, 0);
}

char __license[] SEC("license") = "GPL";
