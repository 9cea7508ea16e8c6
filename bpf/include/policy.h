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

/*
 * The verdict for a connection from `identity` to dst:port. Destinations without policies are
 * allowed without further lookups; a policy set without its default entry denies (fail closed).
 */
static __always_inline __u8 sm_policy_verdict(const __be32 *dst, __u8 family, __be16 port, __u32 identity,
					       __u32 *rule)
{
	struct sm_policy_value *v;
	struct sm_policy_dst *pd;
	struct sm_policy_key k;
	struct sm_ip_key dk;

	sm_ip_key_fill(&dk, dst, family);
	pd = bpf_map_lookup_elem(&sm_policy_dst, &dk);
	if (!pd)
		return SM_VERDICT_ALLOW;
	__builtin_memset(&k, 0, sizeof(k));
	k.set = pd->set;
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
		return SM_VERDICT_DENY;
	*rule = v->rule;
	return v->verdict;
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
	struct sm_ip_key dk;
	__u32 rule = 0;

	sm_ip_key_fill(&dk, dst, family);
	/* Most destinations have no policy: decide that before looking the caller up. */
	if (!bpf_map_lookup_elem(&sm_policy_dst, &dk))
		return 1;
	if (sm_policy_verdict(dst, family, port, sm_current_identity(), &rule) == SM_VERDICT_ALLOW)
		return 1;
	sm_count(SM_CNT_POLICY_DENY_CONNECT, 1);
	return 0;
}

#endif /* SOCKMESH_POLICY_H */
