/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Sizes and enums shared by the fibmesh XDP programs and their Go mirror
 * (fastpath/fib). Every enum ends in a _LEN entry; the Go tests check that
 * their tables have exactly that many entries. */
#pragma once

#ifndef MAX_ROUTES
#define MAX_ROUTES 65536
#endif

/* The flow table is an LRU: it is sized well above the expected number of
 * concurrent flows on a node (a few thousand pods x hundreds of flows) so
 * that eviction only ever touches idle entries. Loaders may override it. */
#ifndef MAX_FLOWS
#define MAX_FLOWS 262144
#endif

#ifndef MAX_POLICY
#define MAX_POLICY 65536
#endif

/* Service ports (VIP:port:protocol) the FIB load-balances, each with its
 * own Maglev table (an inner array map of the services map-in-map). */
#ifndef MAX_SERVICES
#define MAX_SERVICES 65536
#endif

/* Devices the FIB may redirect to (pod veths + node NICs). */
#ifndef MAX_TX_PORTS
#define MAX_TX_PORTS 4096
#endif

/* AF_XDP punt sockets: one slot per (interface, queue); the agent gives
 * each interface PUNT_QUEUES consecutive slots. */
#ifndef PUNT_QUEUES
#define PUNT_QUEUES 16
#endif
#ifndef MAX_PUNT_SLOTS
#define MAX_PUNT_SLOTS 16384
#endif

/* What a flow entry tells the data path to do with the flow's packets. */
enum flow_action {
	FLOW_FORWARD = 0, /* forward through the FIB (routes) */
	FLOW_PASS = 1,    /* hand to the host stack */
	FLOW_DROP = 2,    /* drop and count (revoked / denied flows) */
	FLOW_PUNT = 3,    /* send every packet to the agent over AF_XDP */
	FLOW_ACTION_LEN,
};

/* Address translation of a flow entry (struct flow_val.nat_kind). */
enum flow_nat {
	NAT_NONE = 0,
	NAT_DST = 1, /* a service flow's way out: destination VIP:port -> backend */
	NAT_SRC = 2, /* its way back: source backend -> VIP:port */
	FLOW_NAT_LEN,
};

/* Bits of struct policy_val.flags. */
enum policy_flags {
	/* An L4 AuthorizationPolicy covers this port: a flow without a flow
	 * entry is punted to the agent, which decides and installs one. */
	POLICY_F_PUNT = 1 << 0,
};

/* mTLS mode of a {pod IP, port, protocol}. */
enum mtls_mode {
	MTLS_UNSET = 0,
	MTLS_PERMISSIVE = 1,
	MTLS_STRICT = 2, /* plaintext to this port is dropped in XDP */
	MTLS_DISABLE = 3,
	MTLS_MODE_LEN,
};

/* Next-hop flags. */
enum nexthop_flags {
	NH_F_PUNT_NEW = 1 << 0, /* a flow without an entry needs the agent's decision */
};

/* Why a packet took the path it took. One per-CPU counter per reason. */
enum stat_reason {
	STAT_RX = 0,             /* every packet the program saw */
	STAT_PASS_NON_IPV4,      /* ARP, VLAN, anything not IPv4/IPv6 */
	STAT_PASS_IPV6,          /* IPv6 is not routed by the FIB yet: stack */
	STAT_PASS_MALFORMED,     /* truncated or invalid headers: stack decides */
	STAT_PASS_FRAGMENT,      /* non-first IPv4 fragments: stack reassembles */
	STAT_PASS_ROUTE_MISS,    /* no FIB route: local delivery or stack */
	STAT_PASS_TTL,           /* TTL <= 1: stack sends ICMP time exceeded */
	STAT_PASS_FLOW,          /* flow entry says pass */
	STAT_REDIRECT,           /* forwarded by the FIB via the devmap */
	STAT_TX,                 /* forwarded back out of the ingress device */
	STAT_DROP_STRICT,        /* plaintext to a STRICT mTLS port */
	STAT_DROP_FLOW,          /* flow entry says drop */
	STAT_PUNT,               /* sent to the agent over AF_XDP */
	/* Should stay zero: the agent registers a punt socket on every device
	 * it attaches to before it installs NH_F_PUNT_NEW routes. Non-zero
	 * means the agent is down, and the packet was refused (fail closed). */
	STAT_DROP_PUNT_NO_SOCKET,
	/* Should stay zero: the agent adds a route's device to the devmap
	 * before the route. Non-zero means a route points at a device that
	 * is gone; the packet is passed unmodified to the stack. */
	STAT_PASS_NO_TX_PORT,
	/* A first fragment whose TCP/UDP header does not fit in it (RFC 1858
	 * "tiny fragment"): passing it would let the stack reassemble a
	 * datagram whose port the policy never saw, so it is dropped. */
	STAT_DROP_TINY_FRAGMENT,
	/* Frames the FIB does not rewrite in XDP: longer than the load-time
	 * constant cfg_max_frame_len (the interface's MTU plus Ethernet and
	 * VLAN headers), or, in a frags-aware program, spread over several
	 * buffers. In native mode they are rare (jumbo frames on a
	 * multi-buffer NIC); in generic mode they are GRO aggregates. The
	 * kernel drops a redirected frame longer than the target's MTU
	 * (xdp_ok_fwd_dev: -EMSGSIZE), so they go to the stack, which
	 * segments or fragments them. */
	STAT_PASS_FRAME_TOO_BIG,
	/* Service VIPs (the node's load balancer): a new flow given a
	 * backend by the VIP's Maglev table (two flow entries written). */
	STAT_SVC_NEW_FLOW,
	STAT_SVC_DNAT, /* packets to a VIP rewritten to their backend */
	STAT_SVC_SNAT, /* replies rewritten back to the VIP */
	/* A new flow to a VIP with no ready backend, answered in XDP with
	 * ICMP port unreachable (UDP) or a TCP RST, never forwarded. */
	STAT_SVC_NO_BACKEND,
	/* The same, but no answer could be built (IP options, a TCP RST, an
	 * ICMP error): dropped. */
	STAT_DROP_SVC_NO_BACKEND,
	STAT_REASON_LEN,
};

/* NIC profiles (nic-profiles/<name>.yaml): the value of the load-time
 * constant cfg_nic_profile. The order is nicprofiles.Names: append
 * before NIC_PROFILE_LEN, never reorder (fastpath/fib tests check each
 * profile's id against NIC_PROFILE_<NAME>). */
enum nic_profile {
	NIC_PROFILE_GENERIC = 0,
	NIC_PROFILE_MLX5_CORE,
	NIC_PROFILE_ICE,
	NIC_PROFILE_I40E,
	NIC_PROFILE_IXGBE,
	NIC_PROFILE_BNXT_EN,
	NIC_PROFILE_VIRTIO_NET,
	NIC_PROFILE_VETH,
	NIC_PROFILE_LEN,
};

/* Bits of the load-time constant cfg_nic_flags. */
enum nic_flags {
	/* The program is loaded frags-aware (BPF_F_XDP_HAS_FRAGS) because
	 * the interface's MTU needs multi-buffer XDP: a frame may span
	 * several buffers, so its length comes from bpf_xdp_get_buff_len. */
	NIC_F_XDP_FRAGS = 1 << 0,
};
