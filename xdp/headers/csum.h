/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/ip.h>
#include <bpf/bpf_endian.h>

/* ip_decrease_ttl decrements the TTL and patches the header checksum
 * incrementally (RFC 1624), as the kernel's own forwarding does. */
static __always_inline void ip_decrease_ttl(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;

	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

/* csum_replace2 patches a 16-bit one's complement checksum for one
 * 16-bit word of the summed data changing from `from` to `to` (RFC 1624,
 * eqn. 3: HC' = ~(~HC + ~m + m')). Words and checksum are taken as they
 * lie in the packet: the sum does not depend on byte order. */
static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 c = (__u16)~*sum;

	c += (__u16)~from;
	c += to;
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	*sum = ~c;
}

/* csum_replace4 is csum_replace2 for a 32-bit field (an address). */
static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	csum_replace2(sum, (__u16)(from >> 16), (__u16)(to >> 16));
	csum_replace2(sum, (__u16)from, (__u16)to);
}

/* csum_fold folds a 32-bit partial sum (bpf_csum_diff's result) to the
 * 16-bit checksum field: one's complement of the folded sum. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}
