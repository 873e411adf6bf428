//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* splice_verdict: the in-kernel byte path between an application's
 * plaintext socket and the kTLS socket of its mTLS connection. Both sockets
 * of a joined pair sit in the socks sockhash, keyed by socket cookie; peers
 * maps each cookie to the cookie of the socket its bytes go to. For every
 * message the stream parser hands over, the verdict redirects the bytes to
 * the peer's egress (bpf_sk_redirect_hash, flags 0): towards the kTLS
 * socket they go through its sendmsg, so the kernel encrypts them; from the
 * kTLS socket the verdict runs inside tls_sw_recvmsg on a decrypted record,
 * so kTLS "still needs a reader" (fastpath/splice keeps one in recvmsg).
 *
 * Why a stream parser (which only returns skb->len): kTLS hooks
 * sk_data_ready on top of the psock's. In parser mode the psock's
 * data_ready sees the tls RX context and only wakes readers; in
 * verdict-only mode it calls the socket's read_skb, which kTLS does not
 * override, and the verdict would be run on raw ciphertext straight off the
 * TCP queue. Sockets must be inserted before the tls ULP is set: a socket
 * that already has a ULP cannot join a sockhash.
 *
 * What the verdict sees from kTLS (software RX, net/tls/tls_sw.c): a fresh
 * skb as long as the whole record, the plaintext at offset 5 (the header
 * bytes are not written), then for TLS 1.3 the inner content type and the
 * 16-byte tag area, also not written. A redirect sends the skb from offset 0
 * to skb->len, so the verdict cuts the record down to its plaintext first;
 * anything it cannot cut safely is passed to the reader instead. Measured
 * on Linux 6.12: bpf_skb_change_tail cuts records of about 300 B to 16 KB
 * and refuses full 16 KiB records, so bulk kTLS traffic from the peer goes
 * through the reader (SelfTest reports it). Linux 6.1 refuses kTLS keys on
 * a socket in a sockhash altogether.
 *
 * Fail closed: a socket without a joined peer never has its bytes passed on.
 * Bytes of a socket that is prepared but not joined, or whose peer is gone,
 * are dropped and counted; passing them would hand them to a local reader
 * that did not ask for them (before the ULP is set they are ciphertext that
 * kTLS would then never see). */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

/* Sockets one agent can have joined (two per pair). */
#ifndef MAX_SOCKS
#define MAX_SOCKS 65536
#endif

/* TLS 1.3 record framing (RFC 8446 section 5.2): a 5-byte header, the
 * plaintext, the 1-byte inner content type (no padding: neither kTLS nor
 * Go's crypto/tls pads), a 16-byte AEAD tag. */
#define TLS_HEADER_LEN 5
#define TLS13_TAIL_LEN 17 /* inner content type + tag */
#define TLS_CONTENT_APPLICATION_DATA 23

enum peer_flags {
	/* The pair is installed: redirect to peer. Without it the socket is
	 * prepared (in socks before its tls ULP) and its bytes are dropped. */
	PEER_F_JOINED = 1 << 0,
	/* The socket is a software kTLS TLS 1.3 receiver: the verdict sees
	 * whole decrypted records and cuts them to their plaintext. */
	PEER_F_TLS13_RX = 1 << 1,
	/* Set by the verdict when it passed a record to the reader: every
	 * later record is passed too, in order, until the reader has written
	 * what it got and clears the flag, so no redirected record can
	 * overtake a passed one. */
	PEER_F_HOLD = 1 << 2,
	PEER_F_LEN = 3, /* number of flags */
};

/* peers value: where a socket's bytes go. */
struct peer {
	__u64 peer;  /* socket cookie of the destination socket */
	__u32 flags; /* enum peer_flags */
	__u32 pad;
};

/* Per socket, what the verdict did with the bytes it received. Created
 * zeroed by the loader before the socket enters socks; added to atomically. */
struct sock_stats {
	__u64 redirect_bytes; /* payload bytes handed to the peer's egress */
	__u64 redirect_msgs;
	__u64 pass_bytes;     /* record bytes passed to the local reader */
	__u64 drop_bytes;     /* bytes dropped: not joined, or the peer is gone */
};

/* Global outcome counters, one per verdict decision. */
enum stat_reason {
	STAT_REDIRECT = 0, /* message redirected to the peer's egress */
	/* Should stay zero: the loader writes peers before socks. A socket in
	 * socks without a peers entry has its bytes dropped. */
	STAT_DROP_NO_ENTRY,
	/* Data on a prepared socket before its pair was joined: between
	 * Prepare and the tls ULP (ciphertext the kernel must not lose, so
	 * Join fails the connection), or a stand-in socket written too early. */
	STAT_DROP_NOT_JOINED,
	/* The peer left socks (closed) while bytes were still arriving. */
	STAT_DROP_PEER_GONE,
	/* An empty TLS application_data record: nothing to deliver. */
	STAT_DROP_TLS_EMPTY,
	/* A TLS record that is not application data (alert, handshake) or
	 * is padded: passed to the reader, which handles control records. */
	STAT_PASS_TLS_CONTROL,
	/* Should stay zero: a TLS record shorter than its framing. */
	STAT_PASS_TLS_SHORT,
	/* bpf_skb_change_tail refused to cut the record's tail: it makes no
	 * skb longer than SKB_MAX_ALLOC (about 16 KB, so not a full 16 KiB
	 * record) nor shorter than the header offsets kTLS copied into the
	 * decrypted skb (a few hundred bytes). Passed, intact. */
	STAT_PASS_TLS_TAIL,
	/* bpf_skb_adjust_room refused to cut the header (after the tail was
	 * cut; kTLS's own offsets still describe the record): passed. */
	STAT_PASS_TLS_HEAD,
	/* Passed because an earlier record of this socket was (PEER_F_HOLD). */
	STAT_PASS_HOLD,
	STAT_REASON_LEN,
};

struct splice_stat {
	__u64 msgs;
	__u64 bytes;
};

/* Unused pointers that make BTF carry the enums, for bpf2go -type. */
const enum peer_flags *unused_peer_flags __attribute__((unused));
const enum stat_reason *unused_stat_reason __attribute__((unused));

/* The joined sockets, by socket cookie. Userspace inserts socket fds; a
 * socket leaves the map by itself when it is closed. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u64);
	__type(value, __u64);
	__uint(max_entries, MAX_SOCKS);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* socket cookie */
	__type(value, struct peer);
	__uint(max_entries, MAX_SOCKS);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* socket cookie */
	__type(value, struct sock_stats);
	__uint(max_entries, MAX_SOCKS);
} socket_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct splice_stat);
	__uint(max_entries, STAT_REASON_LEN);
} stats SEC(".maps");

static __always_inline void count(__u32 reason, __u32 len)
{
	struct splice_stat *s = bpf_map_lookup_elem(&stats, &reason);

	if (s) {
		s->msgs++;
		s->bytes += len;
	}
}

static __always_inline int pass(struct peer *p, struct sock_stats *st, __u32 reason, __u32 len)
{
	/* Only this socket's reader runs its verdict (inside recvmsg), so
	 * the flag cannot race with another verdict of the same socket. */
	p->flags |= PEER_F_HOLD;
	if (st)
		__sync_fetch_and_add(&st->pass_bytes, len);
	count(reason, len);
	return SK_PASS;
}

static __always_inline int drop(struct sock_stats *st, __u32 reason, __u32 len)
{
	if (st)
		__sync_fetch_and_add(&st->drop_bytes, len);
	count(reason, len);
	return SK_DROP;
}

SEC("sk_skb/stream_parser")
int splice_parser(struct __sk_buff *skb)
{
	/* Every skb is a message: the byte stream has no framing here. */
	return skb->len;
}

SEC("sk_skb/stream_verdict")
int splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct peer *p = bpf_map_lookup_elem(&peers, &cookie);
	struct sock_stats *st = bpf_map_lookup_elem(&socket_stats, &cookie);
	__u32 len = skb->len;
	__u8 type;

	if (!p)
		return drop(st, STAT_DROP_NO_ENTRY, len);
	if (!(p->flags & PEER_F_JOINED))
		return drop(st, STAT_DROP_NOT_JOINED, len);

	if (p->flags & PEER_F_TLS13_RX) {
		if (p->flags & PEER_F_HOLD)
			return pass(p, st, STAT_PASS_HOLD, len);
		if (len < TLS_HEADER_LEN + TLS13_TAIL_LEN)
			return pass(p, st, STAT_PASS_TLS_SHORT, len);
		if (bpf_skb_load_bytes(skb, len - TLS13_TAIL_LEN, &type, 1))
			return pass(p, st, STAT_PASS_TLS_SHORT, len);
		if (type != TLS_CONTENT_APPLICATION_DATA)
			return pass(p, st, STAT_PASS_TLS_CONTROL, len);
		if (len == TLS_HEADER_LEN + TLS13_TAIL_LEN)
			return drop(st, STAT_DROP_TLS_EMPTY, len);
		/* Tail first: if cutting the header then fails, the record
		 * as kTLS describes it (offset 5, plaintext length) is still
		 * intact and can be passed. */
		if (bpf_skb_change_tail(skb, len - TLS13_TAIL_LEN, 0))
			return pass(p, st, STAT_PASS_TLS_TAIL, len);
		if (bpf_skb_adjust_room(skb, -TLS_HEADER_LEN, 0, 0))
			return pass(p, st, STAT_PASS_TLS_HEAD, len);
		len = skb->len;
	}

	if (bpf_sk_redirect_hash(skb, &socks, &p->peer, 0) != SK_PASS)
		return drop(st, STAT_DROP_PEER_GONE, len);
	if (st) {
		__sync_fetch_and_add(&st->redirect_bytes, len);
		__sync_fetch_and_add(&st->redirect_msgs, 1);
	}
	count(STAT_REDIRECT, len);
	return SK_PASS;
}
