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
