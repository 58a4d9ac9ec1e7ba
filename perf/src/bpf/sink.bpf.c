// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Perf rig: the sink. Counts every frame (and its bytes) that reaches the interface, then
 * drops it.
 *
 * counts  PERCPU_ARRAY  [0] -> { frames, bytes } (read and summed by xdp-sink / xdp-gen)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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

SEC("xdp")
int sink_xdp(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct counts *c = bpf_map_lookup_elem(&counts, &key);

	if (c) {
		c->frames++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
