/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath. Both objects (sock_lb, sock_redir) include this file; all maps are
 * pinned by name under the agent's bpffs directory, so the second object, and the next agent
 * after a restart, reuse the same maps instead of creating new ones.
 *
 * Capacities here are defaults; the agent may override max_entries at load time (settings), and a
 * pinned map with different parameters is reported, not silently replaced.
 */
#ifndef SOCKMESH_MAPS_H
#define SOCKMESH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sockmesh_types.h"

/*
 * Service tables. Hash elements (kernel >= 6.1: bpf_mem_alloc) can be recycled for another entry
 * as soon as they are freed, without waiting for readers; so sm_services values are updated in
 * place (struct sm_svc_value) and carry their key, and sm_backends slots of a generation are only
 * deleted after an RCU grace period (sm_rcu_sync) when no reader can still use them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_svc_key);
	__type(value, struct sm_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_slot_key);
	__type(value, struct sm_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_backends SEC(".maps");

/* LRU: entries of closed sockets are never deleted explicitly; cookies are never reused. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct sm_revnat_key);
	__type(value, struct sm_revnat_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_revnat SEC(".maps");

/*
 * Per-pod unconnected-UDP translations: netns cookie of a local pod -> its own LRU (the agent
 * creates one per pod namespace it knows, SM_REVNAT_POD_ENTRIES each, and drops it with the pod).
 */
#define SM_REVNAT_POD_ENTRIES 2048
/*
 * Sizes, not BTF types: the agent creates the inner maps without BTF, and kernels before 6.2
 * compare an inner map's timer offset with the template's, which differs (-ENOENT with BTF,
 * -EINVAL without) and fails the update with EINVAL.
 */
struct sm_revnat_pod {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SM_REVNAT_POD_ENTRIES);
	__uint(key_size, sizeof(struct sm_revnat_key));
	__uint(value_size, sizeof(struct sm_revnat_value));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sm_revnat_pod); /* must be the last member */
} sm_revnat_pods SEC(".maps");

/*
 * Address of a local pod -> the netns cookie of the namespace the agent found holding it (the
 * pod's own, see mesh-agent/datapath/netns.ts). Locality for same-node redirection: a socket joins
 * sm_sockhash only if its own address is registered to its own namespace, and a peer is looked
 * up in the namespace registered for the peer's address.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_ip_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_local_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_ip_key);
	__type(value, struct sm_local_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_local_eps SEC(".maps");

/* Value size 8: a user-space lookup returns the socket cookie (sockmesh dump sockets). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_sockhash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sm_sock_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_sock_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SM_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sm_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_config SEC(".maps");

/* Agent bookkeeping, never read by a program: see struct sm_identity_key. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_identity_key);
	__type(value, struct sm_identity_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_identities SEC(".maps");

/* Value: reserved (1). See struct sm_flow_key. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_flow_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_udp_flows SEC(".maps");

/* A UDP flow of socket `cookie` with addr:port (a zeroed key: pad bytes are part of it). */
static __always_inline void sm_flow_key_fill(struct sm_flow_key *k, __u64 cookie, const __be32 *addr, __u8 family, __be16 port)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->cookie = cookie;
	k->addr[0] = addr[0];
	k->addr[1] = addr[1];
	k->addr[2] = addr[2];
	k->addr[3] = addr[3];
	k->port = port;
	k->family = family;
}

/*
 * LRU: sockops deletes an entry when its client socket closes and the proxy consumes it; the LRU
 * only bounds what a burst of connections the proxy has not read yet can hold.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sm_steer_key);
	__type(value, struct sm_steer_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_steer SEC(".maps");

/*
 * Destinations (VIP or backend ip:port, TCP) whose HTTP rules the node's proxy has acknowledged:
 * a connect is steered to the proxy only for a destination listed here, and refused otherwise
 * (ECONNREFUSED). The agent adds a destination once the proxy answers ok to a table holding it,
 * removes it when the rules go away, and empties the map when the proxy's control channel drops.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_svc_key);
	__type(value, struct sm_l7_ready_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_l7_ready SEC(".maps");

/* Identity of every known workload IP, cluster-wide (the source of inbound connections). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_ip_key);
	__type(value, struct sm_local_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_ip_identity SEC(".maps");

/* Identity of each local pod's cgroup (the source of outbound connects: the socket is unbound). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sm_local_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_cgroup_identity SEC(".maps");

/*
 * Identity of each local pod's network namespace, by netns cookie: for callers whose cgroup the
 * agent does not know (no Kubernetes source: --xds alone), found from the addresses in the namespace.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sm_local_ep);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_netns_identity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_ip_key);
	__type(value, struct sm_policy_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_policy_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sm_policy_key);
	__type(value, struct sm_policy_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_policy SEC(".maps");

/*
 * Never read by a program. The agent writes slot 0 of this map-in-map after switching services to
 * a new backend generation: the kernel waits for an RCU grace period before a map-in-map update
 * returns (maybe_wait_bpf_programs() in kernel/bpf/syscall.c), so once it returns no program still
 * runs with the old generation and the old slots can be deleted.
 */
struct sm_rcu_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct sm_rcu_inner); /* must be the last member */
} sm_rcu_sync SEC(".maps");

/* A zeroed sm_ip_key for an address (pad bytes are part of the key). */
static __always_inline void sm_ip_key_fill(struct sm_ip_key *k, const __be32 *addr, __u8 family)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr[0] = addr[0];
	k->addr[1] = addr[1];
	k->addr[2] = addr[2];
	k->addr[3] = addr[3];
	k->family = family;
}

static __always_inline void sm_count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&sm_counters, &idx);

	/* Per-CPU, but sockops runs in both process and softirq context on one CPU: add atomically. */
	if (v)
		__sync_fetch_and_add(v, n);
}

#endif /* SOCKMESH_MAPS_H */
