// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Warden's XDP program: attached to both interfaces of every inline pair.
 *
 * For a frame arriving on an interface Warden manages:
 *   1. if an AF_XDP socket (XSK) is bound to the frame's rx queue (so Warden runs):
 *      a. fast path (interface flag WARDEN_FLAG_FAST): a TCP or UDP frame of a flow whose
 *         verdict Warden made final is looked up in `fast` by (ingress slot, protocol,
 *         addresses, ports); a match whose mode admits the frame is redirected in the kernel to
 *         the pair's peer interface (devmap `peers`) and counted in the entry (frames, bytes,
 *         last seen); an entry with `check_mac` admits only frames from its source MAC. Only untagged Ethernet + IPv4 without options or fragmentation, or IPv6
 *         with TCP/UDP as the first next header, and TCP without SYN, FIN, RST or URG are
 *         looked up: everything else goes to user space as before (a FIN or RST ends the
 *         session there);
 *      b. otherwise redirect the frame to the XSK;
 *   2. otherwise, if Warden runs (the XSK of the interface's `live_queue` is in the XSKMAP),
 *      drop the frame and count it as unbound: a queue Warden has not bound (yet: a channel
 *      added since it last looked; or ever: beyond WARDEN_MAX_QUEUES) is never forwarded
 *      uninspected while Warden runs;
 *   3. otherwise (Warden stopped or crashed: the kernel removes a closed socket from the
 *      XSKMAP, so the live queue's entry went with the process) apply the pair's failure mode:
 *        fail_open   -> redirect to the pair's peer interface through the devmap, in-kernel;
 *        fail_closed -> drop.
 * Frames on interfaces Warden does not manage pass to the kernel stack untouched.
 *
 * Maps (shared with user space, see xdp-prog/src/lib.rs):
 *   iface_cfg  HASH     ifindex -> { slot, flags, live_queue }
 *   xsks       XSKMAP   slot * WARDEN_MAX_QUEUES + rx_queue -> XSK
 *   peers      DEVMAP   slot -> peer ifindex
 *   if_stats   PERCPU_ARRAY slot -> counters (frames and bytes per outcome)
 *   fast       HASH     struct fast_key -> struct fast_val (one entry per flow direction;
 *                       max_entries set by the loader, `[dataplane] fast_path_max` x 2)
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define WARDEN_MAX_IFACES 256
#define WARDEN_MAX_QUEUES 256
#define WARDEN_FLAG_FAIL_CLOSED 1u
/* The fast path applies to frames arriving here (the peer accepts in-kernel redirects). */
#define WARDEN_FLAG_FAST 2u

/* Fast path entry modes (struct fast_val.mode). */
/* Every TCP segment (without SYN/FIN/RST/URG) and every UDP datagram of the direction. */
#define WARDEN_FAST_ALL 1u
/* TCP segments without payload only (acknowledgments). */
#define WARDEN_FAST_ACK_ONLY 2u
/* TCP segments whose payload lies within [lo, hi) of sequence space (an opaque body the
 * parser skips by count), and segments without payload. */
#define WARDEN_FAST_RANGE 3u

struct iface_cfg {
	__u32 slot;
	__u32 flags;
	/* An rx queue whose XSK Warden registered: its presence in the XSKMAP means Warden runs. */
	__u32 live_queue;
};

struct if_stats {
	__u64 to_xsk_frames;
	__u64 to_xsk_bytes;
	__u64 fail_open_frames;
	__u64 fail_open_bytes;
	__u64 fail_closed_frames;
	__u64 fail_closed_bytes;
	__u64 unbound_frames;
	__u64 unbound_bytes;
	__u64 fast_frames;
	__u64 fast_bytes;
};

/* One direction of a flow: the interface it arrives on and its 5-tuple as sent. IPv4
 * addresses take the first 4 bytes of src/dst, the rest 0; every pad byte is 0. */
struct fast_key {
	__u32 slot;
	__u8 proto;
	__u8 version;
	__u16 pad;
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
};

struct fast_val {
	__u32 mode;
	/* WARDEN_FAST_RANGE: sequence numbers (host order) bounding the payload forwarded. */
	__u32 lo;
	__u32 hi;
	/* Nonzero: only frames from src_mac match (a source Warden checks by its MAC: an
	 * attachment's address arriving over its bridge); others go to Warden, which judges them. */
	__u32 check_mac;
	/* Frames and bytes (L2, no FCS) forwarded in the kernel, added atomically. */
	__u64 packets;
	__u64 bytes;
	/* bpf_ktime_get_coarse_ns() of the latest one (CLOCK_MONOTONIC_COARSE). */
	__u64 last_ns;
	/* The source MAC of check_mac. */
	__u8 src_mac[6];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WARDEN_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct iface_cfg);
} iface_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, WARDEN_MAX_IFACES * WARDEN_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, WARDEN_MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WARDEN_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct if_stats);
} if_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2);
	__type(key, struct fast_key);
	__type(value, struct fast_val);
} fast SEC(".maps");

/* The fast path entry that admits this frame, or NULL. Parsing is bounded: fixed header
 * offsets only (no IPv4 options, no IPv6 extension headers, no VLAN tags). */
static __always_inline struct fast_val *fast_match(struct xdp_md *ctx, __u32 slot)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 frame = (__u64)(end - data);
	struct ethhdr *eth = data;
	struct fast_key k;
	void *l4;
	__u32 l4len;

	if ((void *)(eth + 1) > end)
		return NULL;
	__builtin_memset(&k, 0, sizeof(k));
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return NULL;
		if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
			return NULL;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (tot < sizeof(*ip) || sizeof(*eth) + tot > frame)
			return NULL;
		k.version = 4;
		k.proto = ip->protocol;
		__builtin_memcpy(k.src, &ip->saddr, 4);
		__builtin_memcpy(k.dst, &ip->daddr, 4);
		l4 = ip + 1;
		l4len = tot - sizeof(*ip);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return NULL;
		if (ip6->version != 6)
			return NULL;
		__u32 plen = bpf_ntohs(ip6->payload_len);
		if (sizeof(*eth) + sizeof(*ip6) + plen > frame)
			return NULL;
		k.version = 6;
		k.proto = ip6->nexthdr;
		__builtin_memcpy(k.src, &ip6->saddr, 16);
		__builtin_memcpy(k.dst, &ip6->daddr, 16);
		l4 = ip6 + 1;
		l4len = plen;
	} else {
		return NULL;
	}

	__u32 payload = 0, seq = 0;
	if (k.proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return NULL;
		__u32 doff = (__u32)t->doff * 4;
		if (doff < sizeof(*t) || doff > l4len)
			return NULL;
		if (t->syn || t->fin || t->rst || t->urg)
			return NULL;
		payload = l4len - doff;
		seq = bpf_ntohl(t->seq);
		k.sport = t->source;
		k.dport = t->dest;
	} else if (k.proto == IPPROTO_UDP) {
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end || l4len < sizeof(*u))
			return NULL;
		if (bpf_ntohs(u->len) != l4len)
			return NULL;
		k.sport = u->source;
		k.dport = u->dest;
	} else {
		return NULL;
	}
	k.slot = slot;

	struct fast_val *v = bpf_map_lookup_elem(&fast, &k);
	if (!v)
		return NULL;
	switch (v->mode) {
	case WARDEN_FAST_ALL:
		break;
	case WARDEN_FAST_ACK_ONLY:
		if (k.proto != IPPROTO_TCP || payload != 0)
			return NULL;
		break;
	case WARDEN_FAST_RANGE: {
		if (k.proto != IPPROTO_TCP)
			return NULL;
		__u32 span = v->hi - v->lo;
		if (payload != 0 && (seq - v->lo > span || seq + payload - v->lo > span))
			return NULL;
		break;
	}
	default:
		return NULL;
	}
	if (v->check_mac) {
#pragma unroll
		for (int i = 0; i < 6; i++)
			if (eth->h_source[i] != v->src_mac[i])
				return NULL;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, frame);
	v->last_ns = bpf_ktime_get_coarse_ns();
	return v;
}

SEC("xdp")
int warden_xdp(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct iface_cfg *cfg = bpf_map_lookup_elem(&iface_cfg, &ifindex);
	if (!cfg)
		return XDP_PASS;

	__u32 slot = cfg->slot;
	if (slot >= WARDEN_MAX_IFACES)
		return XDP_PASS;

	__u64 len = (__u64)(ctx->data_end - ctx->data);
	struct if_stats *st = bpf_map_lookup_elem(&if_stats, &slot);
	__u32 queue = ctx->rx_queue_index;

	if (queue < WARDEN_MAX_QUEUES) {
		__u32 key = slot * WARDEN_MAX_QUEUES + queue;
		if (bpf_map_lookup_elem(&xsks, &key)) {
			if ((cfg->flags & WARDEN_FLAG_FAST) && fast_match(ctx, slot)) {
				if (st) {
					st->fast_frames++;
					st->fast_bytes += len;
				}
				return bpf_redirect_map(&peers, slot, XDP_DROP);
			}
			if (st) {
				st->to_xsk_frames++;
				st->to_xsk_bytes += len;
			}
			return bpf_redirect_map(&xsks, key, XDP_DROP);
		}
	}

	__u32 live = cfg->live_queue;
	if (live < WARDEN_MAX_QUEUES) {
		__u32 live_key = slot * WARDEN_MAX_QUEUES + live;
		if (bpf_map_lookup_elem(&xsks, &live_key)) {
			if (st) {
				st->unbound_frames++;
				st->unbound_bytes += len;
			}
			return XDP_DROP;
		}
	}

	if (cfg->flags & WARDEN_FLAG_FAIL_CLOSED) {
		if (st) {
			st->fail_closed_frames++;
			st->fail_closed_bytes += len;
		}
		return XDP_DROP;
	}
	if (st) {
		st->fail_open_frames++;
		st->fail_open_bytes += len;
	}
	return bpf_redirect_map(&peers, slot, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
