/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L4 policy lookups shared by the connect hooks (outbound) and the ingress hook (inbound). */
#ifndef SOCKMESH_POLICY_H
#define SOCKMESH_POLICY_H

#include <linux/bpf.h>
#include <linux/in.h>
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

/*
 * Does this TCP port of the destination have HTTP rules (SM_PDST_F_L7)? Then only the L7 proxy may
 * open connections to it: any other way in would skip the rules.
 */
static __always_inline int sm_l7_port(const struct sm_policy_dst *pd, __be16 port)
{
	struct sm_policy_value *v;
	struct sm_policy_key k;

	if (!(pd->flags & SM_PDST_F_L7))
		return 0;
	__builtin_memset(&k, 0, sizeof(k));
	k.set = pd->set;
	k.identity = SM_IDENTITY_L7_PORTS;
	k.port = port;
	v = bpf_map_lookup_elem(&sm_policy, &k);
	return v && v->verdict == SM_VERDICT_L7;
}

/*
 * Is the caller the node's L7 proxy: its cgroup as the agent learned it, or that of the proxy
 * handing over to it (still draining its connections during a restart)? cfg may be NULL.
 */
static __always_inline int sm_cfg_is_proxy(const struct sm_config *cfg)
{
	__u64 cg;

	if (!cfg || !(cfg->proxy_cgroup_id | cfg->proxy_cgroup_prev))
		return 0;
	cg = bpf_get_current_cgroup_id();
	return (cfg->proxy_cgroup_id && cg == cfg->proxy_cgroup_id) || (cfg->proxy_cgroup_prev && cg == cfg->proxy_cgroup_prev);
}

static __always_inline int sm_current_is_proxy(void)
{
	__u32 zero = 0;

	return sm_cfg_is_proxy(bpf_map_lookup_elem(&sm_config, &zero));
}

/*
 * The identity of the calling task: the deepest of its cgroups that the agent knows as a pod's,
 * else its socket's network namespace if the agent knows it as a pod's (sm_netns_identity: found
 * without a Kubernetes source), else SM_IDENTITY_UNRESOLVED.
 */
static __always_inline __u32 sm_current_identity(struct bpf_sock_addr *ctx)
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
	id = bpf_get_netns_cookie(ctx);
	ep = bpf_map_lookup_elem(&sm_netns_identity, &id);
	return ep ? ep->identity : SM_IDENTITY_UNRESOLVED;
}

/*
 * Outbound check at connect()/sendmsg(): 1 to proceed, 0 when policy refuses (counted). A port
 * with HTTP rules is open to the L7 proxy alone, and the proxy is not judged again there: it
 * connects on behalf of a client whose identity was judged at the client's own connect (against
 * the service's policy, see sm_steer_to_proxy), and judging the proxy's identity instead would let
 * a denied client through a permissive rule or break an ALLOW list.
 */
static __always_inline int sm_l4_allows(struct bpf_sock_addr *ctx, const struct sm_policy_dst *pd, __be16 port)
{
	__u32 rule = 0;

	if (sm_policy_verdict_in_set(pd->set, port, sm_current_identity(ctx), &rule) == SM_VERDICT_ALLOW)
		return 1;
	sm_count(SM_CNT_POLICY_DENY_CONNECT, 1);
	return 0;
}

/* The same, for a destination whose set is already looked up (NULL: no policies, allowed). */
static __always_inline int sm_policy_allows_pd(struct bpf_sock_addr *ctx, const struct sm_policy_dst *pd, __be16 port)
{
	if (!pd)
		return 1;
	/* HTTP rules are about TCP: UDP to the same port number (QUIC, say) is judged by L4 alone. */
	if (ctx->protocol == IPPROTO_TCP && sm_l7_port(pd, port)) {
		if (sm_current_is_proxy())
			return 1;
		sm_count(SM_CNT_POLICY_DENY_CONNECT, 1);
		return 0;
	}
	return sm_l4_allows(ctx, pd, port);
}

static __always_inline int sm_policy_allows_connect(struct bpf_sock_addr *ctx, const __be32 *dst, __u8 family, __be16 port)
{
	/* Most destinations have no policy: decide that before looking the caller up. */
	return sm_policy_allows_pd(ctx, sm_policy_dst_of(dst, family), port);
}

#endif /* SOCKMESH_POLICY_H */
