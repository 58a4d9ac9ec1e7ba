// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Perf rig: the sink. Counts every frame (and its bytes) that reaches the interface, then
 * drops it. Frames stamped by the generator (IPv4/UDP, payload "WPTS" + CLOCK_MONOTONIC ns,
 * see warden_perf::stamp) also add their one-way latency to a histogram.
 *
 * counts  PERCPU_ARRAY  [0] -> { frames, bytes } (read and summed by xdp-sink / xdp-gen)
 * lat     PERCPU_ARRAY  [i] -> frames: i < 1024: latency in [i, i+1) us; 1024 + j: [j+1, j+2) ms
 *                       for j < 64; LAT_OVER: 65 ms or more, or a stamp from the future
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

#define LAT_LINEAR 1024
#define LAT_MS 64
#define LAT_OVER (LAT_LINEAR + LAT_MS)

struct counts {
	__u64 frames;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counts);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LAT_OVER + 1);
	__type(key, __u32);
	__type(value, __u64);
} lat SEC(".maps");

/* Adds the latency of a stamped frame to `lat`. */
static __always_inline void latency(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	unsigned char *p = data + 42; /* Ethernet, IPv4 without options, UDP */
	__u64 ts, now, us;
	__u32 key;
	__u64 *n;

	if (data + 56 > end)
		return;
	if (eth->h_proto != __constant_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != 17)
		return;
	if (p[0] != 'W' || p[1] != 'P' || p[2] != 'T' || p[3] != 'S')
		return;
	__builtin_memcpy(&ts, p + 4, 8);
	now = bpf_ktime_get_ns();
	if (now < ts) {
		key = LAT_OVER;
	} else {
		us = (now - ts) / 1000;
		if (us < LAT_LINEAR)
			key = us;
		else if (us / 1000 <= LAT_MS)
			key = LAT_LINEAR + us / 1000 - 1;
		else
			key = LAT_OVER;
	}
	n = bpf_map_lookup_elem(&lat, &key);
	if (n)
		*n += 1;
}

SEC("xdp")
int sink_xdp(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct counts *c = bpf_map_lookup_elem(&counts, &key);

	if (c) {
		c->frames++;
		c->bytes += ctx->data_end - ctx->data;
	}
	latency(ctx);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
