/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service VIPs: the FIB as the node's load balancer (what kube-proxy does
 * with iptables, done the way Katran and Cilium do it in XDP).
 *
 * A packet to a VIP:port:protocol of the services map, without a flow
 * entry, is a new flow: the VIP's Maglev table picks its backend by the
 * flow's hash, and two flow entries are written, the way out (DNAT to the
 * backend) and the way back (SNAT to the VIP, keyed as the backend's reply
 * arrives). Later packets follow the entries, so a flow keeps its backend
 * (affinity) until the agent removes the entries (its backend is gone)
 * or the LRU evicts them. flow_hash must stay equal to fastpath/fib
 * FlowHash, which tests and tools use to predict a flow's backend. */

#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parsing.h"
#include "csum.h"

/* MurmurHash3 (x86_32) over the 16 bytes of the key as they lie in
 * memory, seed FLOW_HASH_SEED. */
#define FLOW_HASH_SEED 0x6d61676cu /* "magl" */

static __always_inline __u32 rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 mm3_round(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51u;
	k = rotl32(k, 15);
	k *= 0x1b873593u;
	h ^= k;
	h = rotl32(h, 13);
	return h * 5 + 0xe6546b64u;
}

static __always_inline __u32 flow_hash(const struct flow_key *k)
{
	__u32 h = FLOW_HASH_SEED;

	h = mm3_round(h, k->saddr);
	h = mm3_round(h, k->daddr);
	h = mm3_round(h, (__u32)k->sport | ((__u32)k->dport << 16));
	h = mm3_round(h, (__u32)k->proto);
	h ^= 16;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

/* How many slots after its own a client that is a backend of the VIP
 * looks at for another backend (svc_new_flow). */
#define SVC_SELF_PROBES 8

enum svc_result {
	SVC_NONE = 0,     /* not a service port */
	SVC_NEW,          /* a new flow: entries written, *fv filled */
	SVC_NO_BACKEND,   /* a service port without a ready backend */
};

/* svc_new_flow looks the packet's destination up in the services map and,
 * for a service port, picks the backend and writes the flow's two
 * entries. On SVC_NEW, *fv is the way out's entry as written, this packet
 * already counted in it. */
static __always_inline int svc_new_flow(struct packet *p, struct flow_val *fv)
{
	struct svc_key sk = {
		.vip = p->key.daddr,
		.port = p->key.dport,
		.proto = p->key.proto,
	};
	__u32 zero = 0, idx, m;
	void *table = bpf_map_lookup_elem(&services, &sk);
	struct svc_backend *hdr, *be;

	if (!table)
		return SVC_NONE;
	hdr = bpf_map_lookup_elem(table, &zero);
	if (!hdr || hdr->addr == 0)
		return SVC_NO_BACKEND;
	m = hdr->addr;
	idx = 1 + flow_hash(&p->key) % m;
	be = bpf_map_lookup_elem(table, &idx);
	if (!be || be->addr == 0)
		return SVC_NO_BACKEND;
	/* A client that is itself a backend of the VIP is not given itself:
	 * the packet would come back from its own address, which its kernel
	 * drops as a martian (kube-proxy masquerades that hairpin instead).
	 * The next slots are tried, in table order, SVC_SELF_PROBES at most;
	 * a VIP whose only backend is the client keeps it. fastpath/fib Pick
	 * is the same choice in Go. */
	if (be->addr == p->key.saddr) {
#pragma unroll
		for (int i = 1; i <= SVC_SELF_PROBES; i++) {
			__u32 j = 1 + (idx - 1 + i) % m;
			struct svc_backend *alt = bpf_map_lookup_elem(table, &j);

			if (alt && alt->addr != 0 && alt->addr != p->key.saddr) {
				be = alt;
				break;
			}
		}
	}

	__u64 now = bpf_ktime_get_ns();
	struct flow_key rk = {
		.saddr = be->addr,
		.daddr = p->key.saddr,
		.sport = be->port,
		.dport = p->key.sport,
		.proto = p->key.proto,
	};
	struct flow_val back = {
		.action = FLOW_FORWARD,
		.nat_addr = p->key.daddr,
		.nat_port = p->key.dport,
		.nat_kind = NAT_SRC,
		.last_seen_ns = now,
	};
	__builtin_memset(fv, 0, sizeof(*fv));
	fv->action = FLOW_FORWARD;
	fv->nat_addr = be->addr;
	fv->nat_port = be->port;
	fv->nat_kind = NAT_DST;
	fv->last_seen_ns = now;
	fv->packets = 1; /* this packet */
	fv->bytes = p->len;

	/* A backend port that an L4 policy covers: the flow's first packet
	 * goes to the agent (translated), which turns the way out's entry
	 * into forward or drop. */
	struct policy_key pk = { .addr = be->addr, .port = be->port, .proto = p->key.proto };
	struct policy_val *pv = bpf_map_lookup_elem(&policy, &pk);

	if (pv && (pv->flags & POLICY_F_PUNT))
		fv->action = FLOW_PUNT;

	/* The way back first: once the way out exists, replies find theirs. */
	bpf_map_update_elem(&flows, &rk, &back, BPF_ANY);
	bpf_map_update_elem(&flows, &p->key, fv, BPF_ANY);
	return SVC_NEW;
}

/* nat_rewrite applies a flow entry's translation to the packet: the
 * destination (NAT_DST) or source (NAT_SRC) address and port, with the
 * IPv4 and TCP/UDP checksums patched incrementally (a UDP checksum of 0,
 * "none", stays 0). p->key follows the rewrite. Returns -1 when the L4
 * header is not there to rewrite. */
static __always_inline int nat_rewrite(struct packet *p, void *data_end, const struct flow_val *fv)
{
	struct iphdr *ip = p->ip;
	void *l4 = (void *)ip + ip->ihl * 4;
	__u16 *sum = 0, *portp;
	__u32 *addrp;
	int dst = fv->nat_kind == NAT_DST;
	int udp = 0;

	if (p->key.proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		sum = &tcp->check;
		portp = dst ? &tcp->dest : &tcp->source;
	} else if (p->key.proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return -1;
		if (uh->check)
			sum = &uh->check;
		portp = dst ? &uh->dest : &uh->source;
		udp = 1;
	} else {
		return -1;
	}
	addrp = dst ? &ip->daddr : &ip->saddr;

	__u32 old_addr = *addrp;
	__u16 old_port = *portp;

	*addrp = fv->nat_addr;
	*portp = fv->nat_port;
	csum_replace4(&ip->check, old_addr, fv->nat_addr);
	if (sum) {
		csum_replace4(sum, old_addr, fv->nat_addr);
		csum_replace2(sum, old_port, fv->nat_port);
		if (udp && *sum == 0)
			*sum = 0xffff;
	}
	if (dst) {
		p->key.daddr = fv->nat_addr;
		p->key.dport = fv->nat_port;
	} else {
		p->key.saddr = fv->nat_addr;
		p->key.sport = fv->nat_port;
	}
	return 0;
}

/* ICMP error header (linux/icmp.h would drag in libc's headers). */
struct icmp_err_hdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 unused;
};

#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

/* The answers to a new flow for a VIP without a backend. */
#define REJECT_TTL 64
#define ICMP_REJECT_LEN (ETH_HLEN + 20 + 8 + 20 + 8) /* ICMP error quoting the IP header and 8 bytes */
#define TCP_RST_LEN (ETH_HLEN + 20 + 20)

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

static __always_inline void ip_reply_header(struct iphdr *ip, __u32 saddr, __u32 daddr, __u8 proto, __u16 tot_len)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(tot_len);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = REJECT_TTL;
	ip->protocol = proto;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = 0;
	ip->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, 20, 0));
}

/* back_out sends the frame back out of the interface it came in on. On a
 * veth, XDP_TX hands the frame to the peer's ring but wakes the peer's
 * NAPI only when the peer runs an XDP program (veth_xdp_flush), so an
 * answer to a pod would wait there until other traffic to the pod
 * flushed it; a redirect through the devmap flushes (ndo_xdp_xmit with
 * XDP_XMIT_FLUSH, which a GRO-enabled peer's NAPI serves). Interfaces
 * not in tx_ports (and test runs) get XDP_TX. */
static __always_inline int back_out(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_ports, ctx->ingress_ifindex, XDP_TX);
}

/* reject_udp turns the frame into ICMP destination unreachable, port
 * unreachable (type 3, code 3), from the VIP to the sender, quoting the
 * datagram's IP header and first 8 bytes as RFC 792 asks, and sends it
 * back out (back_out); XDP_DROP when it cannot. */
static __always_inline int reject_udp(struct xdp_md *ctx, struct packet *p)
{
	void *data, *data_end;
	struct ethhdr *eth, *oeth;
	struct iphdr *ip;
	struct icmp_err_hdr *icmp;
	__u32 vip = p->key.daddr, client = p->key.saddr;

	if (p->ip->ihl != 5)
		return XDP_DROP;
	/* Room in front for the new IP and ICMP headers; the old Ethernet
	 * header moves there, the old IP header and 8 bytes become the
	 * quote, and the rest is cut. */
	if (bpf_xdp_adjust_head(ctx, -(int)(20 + 8)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ICMP_REJECT_LEN > data_end)
		return XDP_DROP;
	eth = data;
	oeth = data + 20 + 8;
	__builtin_memcpy(eth, oeth, ETH_HLEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	swap_macs(eth);
	if (bpf_xdp_adjust_tail(ctx, (int)ICMP_REJECT_LEN - (int)(data_end - data)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ICMP_REJECT_LEN > data_end)
		return XDP_DROP;
	ip = data + ETH_HLEN;
	icmp = (void *)(ip + 1);
	ip_reply_header(ip, vip, client, IPPROTO_ICMP, 20 + 8 + 20 + 8);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_PORT_UNREACH;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->checksum = csum_fold(bpf_csum_diff(0, 0, (__be32 *)icmp, 8 + 20 + 8, 0));
	return back_out(ctx);
}

/* reject_tcp answers a TCP segment with a RST from the VIP:port, as a
 * host without a listener does (RFC 9293 3.10.7.1): to a segment with
 * ACK, seq = its ack; otherwise seq 0 and RST|ACK acknowledging it, sent
 * back out (back_out). A RST is never answered (XDP_DROP). */
static __always_inline int reject_tcp(struct xdp_md *ctx, struct packet *p, void *data_end)
{
	struct iphdr *ip = p->ip;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	void *data;
	struct ethhdr *eth;

	if (ip->ihl != 5 || (void *)(tcp + 1) > data_end || tcp->rst)
		return XDP_DROP;

	__u32 seglen = bpf_ntohs(ip->tot_len) - 20 - tcp->doff * 4 + tcp->syn + tcp->fin;
	__u32 in_seq = tcp->seq, in_ack = tcp->ack_seq;
	__u16 sport = tcp->source, dport = tcp->dest;
	int had_ack = tcp->ack;
	__u32 vip = p->key.daddr, client = p->key.saddr;

	if (bpf_xdp_adjust_tail(ctx, (int)TCP_RST_LEN - (int)p->len))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + TCP_RST_LEN > data_end)
		return XDP_DROP;
	eth = data;
	swap_macs(eth);
	ip = data + ETH_HLEN;
	tcp = (void *)(ip + 1);
	ip_reply_header(ip, vip, client, IPPROTO_TCP, 40);
	__builtin_memset(tcp, 0, sizeof(*tcp));
	tcp->source = dport;
	tcp->dest = sport;
	tcp->doff = 5;
	tcp->rst = 1;
	if (had_ack) {
		tcp->seq = in_ack;
	} else {
		tcp->ack = 1;
		tcp->ack_seq = bpf_htonl(bpf_ntohl(in_seq) + seglen);
	}
	/* The pseudo-header (RFC 9293 3.1) and the header. */
	struct {
		__u32 saddr, daddr;
		__u8 zero, proto;
		__u16 len;
	} ph = { .saddr = vip, .daddr = client, .proto = IPPROTO_TCP, .len = bpf_htons(20) };
	__s64 s = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);

	if (s < 0)
		return XDP_DROP;
	tcp->check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)tcp, 20, s));
	return back_out(ctx);
}
