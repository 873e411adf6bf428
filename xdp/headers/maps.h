/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The FIB's maps. All are pinned by name under the loader's pin directory
 * (/sys/fs/bpf/fibmesh/<node>/) so that they outlive an agent restart. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "consts.h"
#include "structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct route_key);
	__type(value, struct nexthop);
	__uint(max_entries, MAX_ROUTES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(max_entries, MAX_FLOWS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_val);
	__uint(max_entries, MAX_POLICY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policy SEC(".maps");

/* A service's Maglev table: the template of the services map's inner
 * maps. BPF_F_INNER_MAP lets each inner map have its own size (M + 1
 * slots); the agent builds a new one per change and swaps it in with one
 * update of the outer map, so a packet sees the old table or the new
 * one, never a table half-written. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, struct svc_key);
	__type(value, __u32);
	__uint(max_entries, MAX_SERVICES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		/* key __u32, value struct svc_backend (8 bytes): sizes,
		 * as clang leaves the struct unsized in a nested map's BTF. */
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(struct svc_backend));
		__uint(max_entries, 1);
		__uint(map_flags, BPF_F_INNER_MAP);
	});
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct stat_val);
	__uint(max_entries, STAT_REASON_LEN);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* ifindex -> device, for bpf_redirect_map. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
	__uint(max_entries, MAX_TX_PORTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

/* ifindex -> first punt slot of that device; slot = base + rx queue. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_TX_PORTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} punt_slots SEC(".maps");

/* AF_XDP sockets of the agent, by punt slot. A socket leaves the map by
 * itself when the agent closes it or dies; an empty slot makes punted
 * packets drop (fail closed). */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, MAX_PUNT_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xsks SEC(".maps");
