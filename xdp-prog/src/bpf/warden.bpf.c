// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Warden's XDP program: attached to both interfaces of every inline pair.
 *
 * For a frame arriving on an interface Warden manages:
 *   1. if an AF_XDP socket (XSK) is bound to the frame's rx queue, redirect the frame to it;
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
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define WARDEN_MAX_IFACES 256
#define WARDEN_MAX_QUEUES 256
#define WARDEN_FLAG_FAIL_CLOSED 1u

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
