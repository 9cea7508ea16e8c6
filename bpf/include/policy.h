/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L4 policy lookups shared by the connect hooks (outbound) and the ingress hook (inbound). */
#ifndef SOCKMESH_POLICY_H
#define SOCKMESH_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "sockmesh_types.h"
#include "maps.h"

/* How deep below the cgroup2 root a pod's cgroup may be (kubepods.slice/.../pod.slice/container). */
#define SM_MAX_CGROUP_DEPTH 12

/* The verdict of policy set `set` for (identity, port), most specific row first. */
static __always_inline __u8 sm_policy_verdict_in_set(__u32 set, __be16 port, __u32 identity, __u32 *rule)
{
	struct sm_policy_value *v;
	struct sm_policy_key k;

	__builtin_memset(&k, 0, sizeof(k));
	k.set = set;
	k.identity = identity;
	k.port = port;
	v = bpf_map_lookup_elem(&sm_policy, &k);
	if (!v) {
		k.port = 0;
		v = bpf_map_lookup_elem(&sm_policy, &k);
	}
	if (!v) {
		k.identity = 0;
		k.port = port;
		v = bpf_map_lookup_elem(&sm_policy, &k);
	}
	if (!v) {
		k.port = 0;
		v = bpf_map_lookup_elem(&sm_policy, &k);
	}
	if (!v)
		return SM_VERDICT_DENY; /* a set without its default row: fail closed */
	*rule = v->rule;
	return v->verdict;
}

/* The policy set of a destination, or NULL when it has no policies (then: allow). */
static __always_inline struct sm_policy_dst *sm_policy_dst_of(const __be32 *dst, __u8 family)
{
	struct sm_ip_key dk;

	sm_ip_key_fill(&dk, dst, family);
	return bpf_map_lookup_elem(&sm_policy_dst, &dk);
}

/* The verdict for a connection from `identity` to dst:port. */
static __always_inline __u8 sm_policy_verdict(const __be32 *dst, __u8 family, __be16 port, __u32 identity,
					       __u32 *rule)
{
	struct sm_policy_dst *pd = sm_policy_dst_of(dst, family);

	return pd ? sm_policy_verdict_in_set(pd->set, port, identity, rule) : SM_VERDICT_ALLOW;
}

/* The identity of the calling task: the deepest of its cgroups that the agent knows as a pod's. */
static __always_inline __u32 sm_current_identity(void)
{
	struct sm_local_ep *ep;
	__u64 id;
	int level;

#pragma unroll
	for (level = SM_MAX_CGROUP_DEPTH; level > 0; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		ep = bpf_map_lookup_elem(&sm_cgroup_identity, &id);
		if (ep)
			return ep->identity;
	}
	return 0;
}

/* Outbound check at connect()/sendmsg(): 1 to proceed, 0 when policy refuses. */
static __always_inline int sm_policy_allows_connect(const __be32 *dst, __u8 family, __be16 port)
{
	/* Most destinations have no policy: decide that before looking the caller up. */
	struct sm_policy_dst *pd = sm_policy_dst_of(dst, family);
	__u32 rule = 0;

	if (!pd)
		return 1;
	if (sm_policy_verdict_in_set(pd->set, port, sm_current_identity(), &rule) == SM_VERDICT_ALLOW)
		return 1;
	sm_count(SM_CNT_POLICY_DENY_CONNECT, 1);
	return 0;
}

#endif /* SOCKMESH_POLICY_H */
