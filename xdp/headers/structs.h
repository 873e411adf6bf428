/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map keys and values. The Go side uses the bpf2go-generated mirrors of
 * these (xdp/fib/fib_bpfel.go); fastpath/fib tests check their sizes. */
#pragma once

#include <linux/types.h>

/* LPM trie key: prefixlen first, then the IPv4 address in network order. */
struct route_key {
	__u32 prefixlen;
	__u32 addr;
};

/* Where a route sends packets: out of ifindex, with these MACs. */
struct nexthop {
	__u32 ifindex;
	__u32 flags; /* enum nexthop_flags */
	__u8 smac[6];
	__u8 dmac[6];
};

/* IPv4 5-tuple, addresses and ports in network byte order. For ICMP echo
 * the identifier is in sport and dport is zero. */
struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u32 action; /* enum flow_action */
	__u32 src_id; /* identity ids assigned by the controller */
	__u32 dst_id;
	__u32 flags;
	/* Service flows: the address and port the packet is rewritten to
	 * (network order), as nat_kind says. */
	__u32 nat_addr;
	__u16 nat_port;
	__u8 nat_kind; /* enum flow_nat */
	__u8 nat_pad;
	__u64 packets; /* updated atomically by the data path */
	__u64 bytes;
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet */
};

/* {pod IP, port, protocol} -> mTLS mode. */
struct policy_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct policy_val {
	__u32 mode;  /* enum mtls_mode */
	__u32 flags; /* enum policy_flags */
};

/* A service port: VIP, port (network order), protocol. */
struct svc_key {
	__u32 vip;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* One slot of a service's Maglev table. Slot 0 is the table's header:
 * addr holds the table size M (0: no ready backend) and port is 0;
 * slots 1..M hold backends (address and port in network order). */
struct svc_backend {
	__u32 addr;
	__u16 port;
	__u16 pad;
};

struct stat_val {
	__u64 packets;
	__u64 bytes;
};
