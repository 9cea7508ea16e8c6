/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Building sm_sock_key from sockops and from sk_msg. The sockops key describes a socket from its
 * own side; sk_msg builds the key of the PEER (local and remote swapped), so that for a same-node
 * pair the two must agree byte for byte. Port byte order differs per context:
 *   bpf_sock_ops.local_port, sk_msg_md.local_port: host order;
 *   bpf_sock_ops.remote_port, sk_msg_md.remote_port: network order, in the UPPER 16 bits of the
 *   u32 on little-endian kernels (the ctx rewrite loads skc_dport and shifts it left by 16).
 */
#ifndef SOCKMESH_SOCK_KEY_H
#define SOCKMESH_SOCK_KEY_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include "sockmesh_types.h"
#include "lb.h" /* sm_v4_mapped */

/* An established socket never has remote port 0, so whichever half is non-zero holds it. */
static __always_inline __be16 sm_remote_port(__u32 v)
{
	return (v >> 16) ? (__be16)(v >> 16) : (__be16)v;
}

static __always_inline __be16 sm_local_port(__u32 host_order)
{
	return bpf_htons((__u16)host_order);
}

/*
 * Fill addresses in normal form: AF_INET, or AF_INET6 with both ends IPv4-mapped (an IPv4
 * connection accepted on a dual-stack listener) folded to AF_INET. Returns 0 on success.
 */
#define SM_FILL_ADDRS(k, c)                                                                        \
	({                                                                                         \
		int __ret = 0;                                                                     \
		if ((c)->family == SM_AF_INET) {                                                   \
			(k)->family = SM_AF_INET;                                                  \
			(k)->local[0] = (c)->local_ip4;                                            \
			(k)->remote[0] = (c)->remote_ip4;                                          \
		} else if ((c)->family == SM_AF_INET6) {                                           \
			__u32 l0 = (c)->local_ip6[0], l1 = (c)->local_ip6[1];                      \
			__u32 l2 = (c)->local_ip6[2], l3 = (c)->local_ip6[3];                      \
			__u32 r0 = (c)->remote_ip6[0], r1 = (c)->remote_ip6[1];                    \
			__u32 r2 = (c)->remote_ip6[2], r3 = (c)->remote_ip6[3];                    \
			if (sm_v4_mapped(l0, l1, l2) && sm_v4_mapped(r0, r1, r2)) {                \
				(k)->family = SM_AF_INET;                                          \
				(k)->local[0] = l3;                                                \
				(k)->remote[0] = r3;                                               \
			} else {                                                                   \
				(k)->family = SM_AF_INET6;                                         \
				(k)->local[0] = l0;                                                \
				(k)->local[1] = l1;                                                \
				(k)->local[2] = l2;                                                \
				(k)->local[3] = l3;                                                \
				(k)->remote[0] = r0;                                               \
				(k)->remote[1] = r1;                                               \
				(k)->remote[2] = r2;                                               \
				(k)->remote[3] = r3;                                               \
			}                                                                          \
		} else {                                                                           \
			__ret = -1;                                                                \
		}                                                                                  \
		__ret;                                                                             \
	})

/* The socket's own key, from sockops. */
static __always_inline int sm_key_from_sockops(struct bpf_sock_ops *skops, struct sm_sock_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (SM_FILL_ADDRS(k, skops))
		return -1;
	k->local_port = sm_local_port(skops->local_port);
	k->remote_port = sm_remote_port(skops->remote_port);
	return 0;
}

/* The PEER's key, from sk_msg: what the peer's sockops stored for itself, in namespace `netns`. */
static __always_inline int sm_peer_key_from_msg(struct sk_msg_md *msg, __u64 netns, struct sm_sock_key *k)
{
	struct sm_sock_key own;

	__builtin_memset(&own, 0, sizeof(own));
	if (SM_FILL_ADDRS(&own, msg))
		return -1;
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = netns;
	k->family = own.family;
	k->local[0] = own.remote[0];
	k->local[1] = own.remote[1];
	k->local[2] = own.remote[2];
	k->local[3] = own.remote[3];
	k->remote[0] = own.local[0];
	k->remote[1] = own.local[1];
	k->remote[2] = own.local[2];
	k->remote[3] = own.local[3];
	k->local_port = sm_remote_port(msg->remote_port);
	k->remote_port = sm_local_port(msg->local_port);
	return 0;
}

#endif /* SOCKMESH_SOCK_KEY_H */
