// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Perf rig: the in-kernel forwarding ceiling. Attached to both interfaces of a pair, it sends
 * every frame out of the other interface with a devmap redirect, untouched.
 *
 * peers  DEVMAP_HASH  ingress ifindex -> egress ifindex (filled by xdp-redirect)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} peers SEC(".maps");

SEC("xdp")
int redirect_xdp(struct xdp_md *ctx)
{
	/* XDP_ABORTED if the ingress interface has no peer, so a misconfiguration shows up in
	 * the xdp:xdp_exception tracepoint instead of silently passing traffic. */
	return bpf_redirect_map(&peers, ctx->ingress_ifindex, XDP_ABORTED);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
