/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bounds-checked header parsing. Every accessor checks against data_end
 * before it returns a pointer; callers never touch bytes past it. */
#pragma once

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "structs.h"

/* linux/icmp.h drags in libc's socket headers; the FIB needs only this. */
struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u16 id;
	__u16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

enum parse_result {
	PARSE_OK = 0,
	PARSE_NON_IPV4,
	PARSE_IPV6,
	PARSE_MALFORMED,
	PARSE_FRAGMENT, /* non-first fragment: no L4 header */
	PARSE_TINY_FRAGMENT, /* first fragment too short for its TCP/UDP ports */
};

struct packet {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct flow_key key; /* filled for TCP/UDP/ICMP first fragments */
	__u32 len;           /* frame length */
	__u8 has_ports;      /* TCP or UDP with a complete header */
};

static __always_inline int parse_packet(void *data, void *data_end, struct packet *p)
{
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl_len;
	__u16 tot_len;
	__u64 tot_len_w;

	p->len = data_end - data;
	if ((void *)(eth + 1) > data_end)
		return PARSE_MALFORMED;
	p->eth = eth;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return PARSE_IPV6;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NON_IPV4;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	ihl_len = ip->ihl * 4;
	/* Linux 6.1's verifier keeps no bounds through the byte swap, and
	 * then refuses the pointer arithmetic below ("math between pkt
	 * pointer and register with unbounded min value"); clang drops a
	 * plain mask (it knows a 16-bit swap fits), hence the barrier. */
	tot_len_w = bpf_ntohs(ip->tot_len);
	asm volatile("" : "+r"(tot_len_w));
	tot_len_w &= 0xffff;
	tot_len = tot_len_w;
	/* The IP datagram must fit in the frame (Ethernet padding may follow
	 * it) and hold at least its own header. */
	if (tot_len < ihl_len || (void *)ip + tot_len > data_end)
		return PARSE_MALFORMED;
	p->ip = ip;

	p->key.saddr = ip->saddr;
	p->key.daddr = ip->daddr;
	p->key.proto = ip->protocol;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return PARSE_FRAGMENT;

	/* L4 headers must end within the datagram, not just within the
	 * frame: bytes past tot_len are Ethernet padding (a short frame is
	 * padded to 60 bytes on the wire), not a header. The data_end checks
	 * stay for the verifier. */
	void *ip_end = (void *)ip + tot_len;
	void *l4 = (void *)ip + ihl_len;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end || (void *)(tcp + 1) > ip_end || tcp->doff < 5)
			return (ip->frag_off & bpf_htons(IP_MF)) ? PARSE_TINY_FRAGMENT : PARSE_MALFORMED;
		p->key.sport = tcp->source;
		p->key.dport = tcp->dest;
		p->has_ports = 1;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end || (void *)(udp + 1) > ip_end)
			return (ip->frag_off & bpf_htons(IP_MF)) ? PARSE_TINY_FRAGMENT : PARSE_MALFORMED;
		p->key.sport = udp->source;
		p->key.dport = udp->dest;
		p->has_ports = 1;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmp_echo_hdr *icmp = l4;
		if ((void *)(icmp + 1) > data_end || (void *)(icmp + 1) > ip_end)
			return PARSE_MALFORMED;
		if (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY)
			p->key.sport = icmp->id;
		break;
	}
	default:
		break;
	}
	return PARSE_OK;
}
