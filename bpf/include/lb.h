/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service lookup, backend choice and reverse translation, shared by the cgroup sock_addr hooks. */
#ifndef SOCKMESH_LB_H
#define SOCKMESH_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "sockmesh_types.h"
#include "maps.h"

/*
 * The errno a client sees when it connects to a service with no usable backend. ECONNREFUSED is
 * what kube-proxy's REJECT rule produces, so applications behave as they do without a mesh:
 * they fail at once and their retry logic runs, instead of waiting for a SYN timeout.
 */
#define SM_NO_BACKEND_ERRNO ECONNREFUSED

/* Outcome of a translation attempt. */
enum sm_xlate {
	SM_XLATE_NOT_SERVICE = 0, /* not a VIP: leave the address alone */
	SM_XLATE_DONE,            /* *out holds the chosen backend */
	SM_XLATE_NO_BACKEND,      /* a VIP with no usable backend: reject */
	SM_XLATE_ERROR,           /* inconsistent maps (should not happen): reject, counted */
};

/* ::ffff:a.b.c.d, as dual-stack sockets show IPv4 peers. */
static __always_inline int sm_v4_mapped(__u32 a0, __u32 a1, __u32 a2)
{
	return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff);
}

/*
 * Choose a backend for (addr, port, proto). Slots hold each healthy backend a number of times
 * proportional to its weight, so a uniform slot choice is a weighted backend choice.
 */
static __always_inline enum sm_xlate sm_lb_xlate(const struct sm_svc_key *key, struct sm_backend *out, __u32 *flags)
{
	struct sm_svc_value *svc;
	struct sm_backend *be;
	struct sm_slot_key sk;
	__u32 count, match;

	svc = bpf_map_lookup_elem(&sm_services, key);
	if (!svc)
		return SM_XLATE_NOT_SERVICE;
	/* One consistent copy of this generation; every later read uses it. */
	bpf_spin_lock(&svc->lock);
	sk.svc_id = svc->svc_id;
	sk.gen = svc->gen;
	count = svc->slot_count;
	*flags = svc->flags;
	match = svc->vip[0] == key->addr[0] && svc->vip[1] == key->addr[1] && svc->vip[2] == key->addr[2] &&
		svc->vip[3] == key->addr[3] && svc->vip_port == key->port && svc->vip_proto == key->proto &&
		svc->vip_family == key->family;
	bpf_spin_unlock(&svc->lock);
	if (!match)
		return SM_XLATE_NOT_SERVICE; /* the service was deleted under us */
	if (count == 0)
		return SM_XLATE_NO_BACKEND;

	sk.slot = bpf_get_prandom_u32() % count;
	be = bpf_map_lookup_elem(&sm_backends, &sk);
	if (!be)
		return SM_XLATE_ERROR;
	*out = *be;
	return SM_XLATE_DONE;
}

/* The revnat key of (socket, backend): a zeroed struct, pad bytes are part of the key. */
static __always_inline void sm_revnat_key_fill(struct sm_revnat_key *rk, __u64 cookie, const __be32 *addr,
					       __u8 family, __be16 port)
{
	__builtin_memset(rk, 0, sizeof(*rk));
	rk->cookie = cookie;
	rk->addr[0] = addr[0];
	rk->addr[1] = addr[1];
	rk->addr[2] = addr[2];
	rk->addr[3] = addr[3];
	rk->port = port;
	rk->family = family;
}

/*
 * The unconnected-UDP table of the socket's pod (by netns cookie), or the shared sm_revnat for a
 * namespace the agent has given none.
 */
static __always_inline void *sm_revnat_table(__u64 netns)
{
	void *t = bpf_map_lookup_elem(&sm_revnat_pods, &netns);

	return t ? t : (void *)&sm_revnat;
}

/* Unconnected UDP: remember which VIP a datagram to `be` was sent to, for its replies. */
static __always_inline void sm_revnat_record(__u64 cookie, __u64 netns, const struct sm_backend *be,
					     const struct sm_svc_key *vip)
{
	struct sm_revnat_value rv, *cur;
	struct sm_revnat_key rk;
	void *table = sm_revnat_table(netns);

	sm_revnat_key_fill(&rk, cookie, be->addr, be->family, be->port);
	__builtin_memset(&rv, 0, sizeof(rv));
	rv.addr[0] = vip->addr[0];
	rv.addr[1] = vip->addr[1];
	rv.addr[2] = vip->addr[2];
	rv.addr[3] = vip->addr[3];
	rv.port = vip->port;
	rv.family = vip->family;
	/* sendmsg() runs this per datagram: skip the write (and its bucket lock) when nothing changed. */
	cur = bpf_map_lookup_elem(table, &rk);
	if (cur && cur->addr[0] == rv.addr[0] && cur->addr[1] == rv.addr[1] && cur->addr[2] == rv.addr[2] &&
	    cur->addr[3] == rv.addr[3] && cur->port == rv.port && cur->family == rv.family)
		return;
	if (bpf_map_update_elem(table, &rk, &rv, BPF_ANY))
		sm_count(SM_CNT_MAP_ERROR, 1);
}

/* The VIP an unconnected UDP socket sent to `addr`:`port`, from its pod's table, else the shared one. */
static __always_inline struct sm_revnat_value *sm_revnat_lookup(__u64 cookie, __u64 netns, const __be32 *addr,
								 __u8 family, __be16 port)
{
	struct sm_revnat_key rk;

	struct sm_revnat_value *rv;
	void *t = bpf_map_lookup_elem(&sm_revnat_pods, &netns);

	sm_revnat_key_fill(&rk, cookie, addr, family, port);
	if (t) {
		rv = bpf_map_lookup_elem(t, &rk);
		if (rv)
			return rv;
	}
	/* Also a pod's socket that sent before its pod had a table (or before an upgrade). */
	return bpf_map_lookup_elem(&sm_revnat, &rk);
}

#endif /* SOCKMESH_LB_H */
