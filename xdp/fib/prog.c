//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* fib_forward: the fibmesh XDP FIB. Attached to the node NIC and to the host
 * side of every pod veth. For each IPv4 packet:
 *
 *   1. policy: plaintext TCP/UDP to a STRICT mTLS {pod IP, port} -> drop;
 *   2. flows:  an entry decides (forward / pass / drop / punt) and counts.
 *              A TCP/UDP packet to a service VIP without one is a new
 *              flow: the VIP's Maglev table picks a backend and two
 *              entries are written (service.h); an entry with a
 *              translation rewrites the packet (DNAT out, SNAT back),
 *              and the backend's port is checked as in 1. A VIP without
 *              a ready backend is answered with ICMP port unreachable or
 *              a TCP RST. A flow without an entry to a port an L4
 *              policy covers is punted to the agent;
 *   3. routes: longest-prefix match -> next hop; routes flagged
 *              NH_F_PUNT_NEW send flows without an entry to the agent over
 *              AF_XDP (fail closed when no agent socket is there);
 *   4. forward: TTL - 1, checksum fix, MAC rewrite, redirect through the
 *              tx_ports devmap straight to the target device.
 *
 * Anything the FIB does not handle (non-IPv4, IPv6, malformed, fragments,
 * route misses, TTL expiry, frames too big to forward in XDP) passes to
 * the host stack unmodified. Every outcome has a counter in stats.
 *
 * The loader (fastpath/fib) loads one copy of the program per NIC profile
 * in use, with the load-time constants below set from the interface's
 * profile (nic-profiles/, `fibctl nic`); the verifier sees their values
 * and drops the code a profile does not use. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parsing.h"
#include "csum.h"
#include "service.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Unused pointers that make BTF carry the enums, for bpf2go -type. */
const enum flow_action *unused_flow_action __attribute__((unused));
const enum mtls_mode *unused_mtls_mode __attribute__((unused));
const enum nexthop_flags *unused_nexthop_flags __attribute__((unused));
const enum stat_reason *unused_stat_reason __attribute__((unused));
const enum nic_profile *unused_nic_profile __attribute__((unused));
const enum nic_flags *unused_nic_flags __attribute__((unused));
const enum flow_nat *unused_flow_nat __attribute__((unused));
const enum policy_flags *unused_policy_flags __attribute__((unused));

/* Load-time constants (.rodata), set by the loader before load. The
 * defaults are the generic profile with no frame limit: what tests and
 * tools that load the program without an interface get. */
volatile const __u32 cfg_nic_profile = NIC_PROFILE_GENERIC; /* enum nic_profile */
volatile const __u32 cfg_nic_flags = 0;                      /* enum nic_flags */
/* The largest frame the FIB forwards in XDP, 0 for no limit: the
 * interface's MTU + 14 (Ethernet) + 4 (VLAN), as the kernel counts a
 * redirect target's limit (xdp_ok_fwd_dev). See STAT_PASS_FRAME_TOO_BIG. */
volatile const __u32 cfg_max_frame_len = 0;

static __always_inline void count(__u32 reason, __u32 len)
{
	struct stat_val *v = bpf_map_lookup_elem(&stats, &reason);

	if (v) {
		v->packets++;
		v->bytes += len;
	}
}

static __always_inline int punt(struct xdp_md *ctx, struct packet *p)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *base = bpf_map_lookup_elem(&punt_slots, &ifindex);
	__u32 slot;

	if (!base)
		goto no_socket;
	/* A device owns PUNT_QUEUES slots from base: a higher queue has no
	 * socket and must not reach the next device's slots (the kernel
	 * would drop the packet there after it was counted as punted). */
	if (ctx->rx_queue_index >= PUNT_QUEUES)
		goto no_socket;
	slot = *base + ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &slot))
		goto no_socket;
	count(STAT_PUNT, p->len);
	return bpf_redirect_map(&xsks, slot, XDP_DROP);

no_socket:
	count(STAT_DROP_PUNT_NO_SOCKET, p->len);
	return XDP_DROP;
}

static __always_inline struct policy_val *port_policy(const struct flow_key *k)
{
	struct policy_key pk = {
		.addr = k->daddr,
		.port = k->dport,
		.proto = k->proto,
	};

	return bpf_map_lookup_elem(&policy, &pk);
}

SEC("xdp")
int fib_forward(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet p = {};
	struct flow_val *fv;
	struct nexthop *nh;
	__u32 oif;

	/* The frame's length first: a frame the FIB will not forward is
	 * passed up without being parsed. Only a frags-aware program sees
	 * multi-buffer frames; the headers the FIB rewrites are in the first
	 * buffer, but the parser checks lengths against it alone, so a frame
	 * that continues in more buffers goes to the stack too. */
	__u32 first = data_end - data;
	__u32 len = first;

	if (cfg_nic_flags & NIC_F_XDP_FRAGS)
		len = bpf_xdp_get_buff_len(ctx);
	count(STAT_RX, len);
	if (len != first || (cfg_max_frame_len && len > cfg_max_frame_len)) {
		count(STAT_PASS_FRAME_TOO_BIG, len);
		return XDP_PASS;
	}
	int res = parse_packet(data, data_end, &p);

	switch (res) {
	case PARSE_OK:
		break;
	case PARSE_IPV6:
		count(STAT_PASS_IPV6, p.len);
		return XDP_PASS;
	case PARSE_NON_IPV4:
		count(STAT_PASS_NON_IPV4, p.len);
		return XDP_PASS;
	case PARSE_FRAGMENT:
		count(STAT_PASS_FRAGMENT, p.len);
		return XDP_PASS;
	case PARSE_TINY_FRAGMENT:
		count(STAT_DROP_TINY_FRAGMENT, p.len);
		return XDP_DROP;
	default:
		count(STAT_PASS_MALFORMED, p.len);
		return XDP_PASS;
	}

	struct iphdr *ip = p.ip;
	if (!ip)
		return XDP_PASS;

	/* Policy before flows: plaintext to a STRICT port is dropped
	 * whatever a flow entry says. */
	struct policy_val *pv = 0;

	if (p.has_ports) {
		pv = port_policy(&p.key);
		if (pv && pv->mode == MTLS_STRICT) {
			count(STAT_DROP_STRICT, p.len);
			return XDP_DROP;
		}
	}

	fv = bpf_map_lookup_elem(&flows, &p.key);
	struct flow_val fresh;
	int in_map = fv != 0;

	if (!fv && p.has_ports) {
		switch (svc_new_flow(&p, &fresh)) {
		case SVC_NEW:
			/* The entry was written with this packet counted. */
			count(STAT_SVC_NEW_FLOW, p.len);
			fv = &fresh;
			break;
		case SVC_NO_BACKEND: {
			int act = p.key.proto == IPPROTO_TCP ? reject_tcp(ctx, &p, data_end) : reject_udp(ctx, &p);

			count(act != XDP_DROP ? STAT_SVC_NO_BACKEND : STAT_DROP_SVC_NO_BACKEND, p.len);
			return act;
		}
		default:
			break;
		}
	}

	__u32 action = FLOW_FORWARD;

	if (fv) {
		if (in_map) {
			__sync_fetch_and_add(&fv->packets, 1);
			__sync_fetch_and_add(&fv->bytes, p.len);
			fv->last_seen_ns = bpf_ktime_get_ns();
		}
		action = fv->action;
		/* A service flow is translated before anything else looks at
		 * it: the policy below sees the backend, and a punted packet
		 * reaches the agent as the backend receives it. */
		if (fv->nat_kind == NAT_DST || fv->nat_kind == NAT_SRC) {
			if (action == FLOW_FORWARD || action == FLOW_PUNT) {
				if (nat_rewrite(&p, data_end, fv)) {
					count(STAT_PASS_MALFORMED, p.len);
					return XDP_PASS;
				}
				if (fv->nat_kind == NAT_SRC) {
					count(STAT_SVC_SNAT, p.len);
				} else {
					count(STAT_SVC_DNAT, p.len);
					/* The backend's port has a policy of its own. */
					pv = port_policy(&p.key);
					if (pv && pv->mode == MTLS_STRICT) {
						count(STAT_DROP_STRICT, p.len);
						return XDP_DROP;
					}
				}
			}
		}
	}

	if (fv) {
		switch (action) {
		case FLOW_FORWARD:
			break;
		case FLOW_PASS:
			count(STAT_PASS_FLOW, p.len);
			return XDP_PASS;
		case FLOW_PUNT:
			return punt(ctx, &p);
		default: /* FLOW_DROP, and anything unknown: fail closed */
			count(STAT_DROP_FLOW, p.len);
			return XDP_DROP;
		}
	} else if (pv && (pv->flags & POLICY_F_PUNT)) {
		/* An L4 policy covers the port: the agent decides the flow. */
		return punt(ctx, &p);
	}

	struct route_key rk = { .prefixlen = 32, .addr = p.key.daddr };
	nh = bpf_map_lookup_elem(&routes, &rk);
	if (!nh) {
		count(STAT_PASS_ROUTE_MISS, p.len);
		return XDP_PASS;
	}
	if (!fv && (nh->flags & NH_F_PUNT_NEW))
		return punt(ctx, &p);
	if (ip->ttl <= 1) {
		count(STAT_PASS_TTL, p.len);
		return XDP_PASS;
	}

	oif = nh->ifindex;
	if (oif != ctx->ingress_ifindex && !bpf_map_lookup_elem(&tx_ports, &oif)) {
		count(STAT_PASS_NO_TX_PORT, p.len);
		return XDP_PASS;
	}

	ip_decrease_ttl(ip);
	__builtin_memcpy(p.eth->h_source, nh->smac, ETH_ALEN);
	__builtin_memcpy(p.eth->h_dest, nh->dmac, ETH_ALEN);

	if (oif == ctx->ingress_ifindex) {
		count(STAT_TX, p.len);
		return back_out(ctx);
	}
	count(STAT_REDIRECT, p.len);
	return bpf_redirect_map(&tx_ports, oif, 0);
}
