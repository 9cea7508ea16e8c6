// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level service translation: cgroup sock_addr hooks. A connect()/sendmsg() to a service
 * VIP is rewritten to a backend once, in the caller's own syscall; no packet is ever NATed.
 * getpeername()/recvmsg() map the backend back to the VIP, so the application never sees it.
 *
 * Every hook returns 1 (proceed) unless it rejects: 0 plus bpf_set_retval() gives the caller a
 * real errno instead of the default EPERM.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/sockmesh_types.h"
#include "include/maps.h"
#include "include/lb.h"
#include "include/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum sm_steer {
	SM_STEER_NONE = 0, /* not for the proxy: translate to a backend as usual */
	SM_STEER_DONE,     /* *out is the proxy */
	SM_STEER_REFUSE,   /* the connect needs the proxy's verdict and no proxy can give it: refuse it */
	SM_STEER_ERROR,    /* the same, because the socket state could not be kept: refuse it */
	SM_STEER_DENY,     /* the caller's identity is refused by the service's L4 policy (counted) */
};

/*
 * A TCP connect to a service with HTTP rules goes to the node's L7 proxy instead of a backend: on
 * SM_STEER_DONE *out is the proxy's address, which the caller writes like any backend (and records
 * for getpeername, so the client still sees the VIP). The socket remembers where it was going
 * (socket-local storage); sockops publishes that, keyed by the client's address, once the
 * connection is up (map sm_steer), for the proxy to read. Connects from the proxy's own cgroup are
 * translated to a backend as usual (SM_STEER_NONE), and so is UDP, which carries no HTTP.
 * The caller's L4 policy is judged here, before any byte moves (SM_STEER_DENY): against the VIP's
 * own policy set, which the agent writes as the conjunction of the sets of every backend of the
 * service (a client is let through only if each backend the proxy may pick would let it in).
 * Fail closed: without a proxy of the VIP's family, or before the proxy has acknowledged the
 * destination's rules (SM_STEER_REFUSE both), or without the socket state
 * that tells the proxy where the connection was going (SM_STEER_ERROR), the HTTP rules could not
 * be applied, so the connect is refused rather than sent to a backend unjudged.
 */
static __always_inline enum sm_steer sm_steer_to_proxy(struct bpf_sock_addr *ctx, const struct sm_svc_key *vip,
						       struct sm_backend *out)
{
	struct sm_policy_dst *pd;
	struct sm_sock_state *st;
	struct sm_config *cfg;
	struct bpf_sock *sk;
	__u32 zero = 0;

	if (ctx->protocol != IPPROTO_TCP)
		return SM_STEER_NONE;
	cfg = bpf_map_lookup_elem(&sm_config, &zero);
	if (!cfg)
		return SM_STEER_REFUSE;
	if (sm_cfg_is_proxy(cfg))
		return SM_STEER_NONE;
	/* The agent writes a set for every destination with HTTP rules; none yet means a change is
	 * being applied: refuse rather than steer unjudged. */
	pd = sm_policy_dst_of(vip->addr, vip->family);
	if (!pd)
		return SM_STEER_ERROR;
	if (!sm_l4_allows(ctx, pd, vip->port))
		return SM_STEER_DENY;
	if (!(cfg->flags & (vip->family == SM_AF_INET ? SM_CFG_F_PROXY4 : SM_CFG_F_PROXY6)))
		return SM_STEER_REFUSE;
	/* Only once the proxy has acknowledged this destination's rules (sm_l7_ready). `vip` is a
	 * whole key already: TCP (checked above), and struct sm_svc_key has no padding. */
	if (!bpf_map_lookup_elem(&sm_l7_ready, vip))
		return SM_STEER_REFUSE;
	sk = ctx->sk;
	if (!sk)
		return SM_STEER_ERROR;
	st = bpf_sk_storage_get(&sm_sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return SM_STEER_ERROR;
	st->steered = 1;
	st->xlated = 1;
	st->orig[0] = vip->addr[0];
	st->orig[1] = vip->addr[1];
	st->orig[2] = vip->addr[2];
	st->orig[3] = vip->addr[3];
	st->orig_port = vip->port;
	st->orig_family = vip->family;

	__builtin_memset(out, 0, sizeof(*out));
	out->family = vip->family;
	out->port = cfg->proxy_port;
	if (vip->family == SM_AF_INET) {
		out->addr[0] = cfg->proxy4;
	} else {
		out->addr[0] = cfg->proxy6[0];
		out->addr[1] = cfg->proxy6[1];
		out->addr[2] = cfg->proxy6[2];
		out->addr[3] = cfg->proxy6[3];
	}
	sm_count(SM_CNT_L7_STEERED, 1);
	return SM_STEER_DONE;
}

/*
 * A connect to a service with HTTP rules that cannot reach the L7 proxy: ECONNREFUSED, counted as
 * "no usable backend" (for such a service the proxy is the only usable way in).
 */
static __always_inline int sm_l7_refuse(void)
{
	sm_count(SM_CNT_CONNECT_NO_BACKEND, 1);
	bpf_set_retval(-SM_NO_BACKEND_ERRNO);
	return 0;
}

/* Refused by L4 policy: EACCES, so the application can tell it from "nothing listening". */
static __always_inline int sm_policy_reject(void)
{
	bpf_set_retval(-EACCES);
	return 0;
}

/* Reject with a real errno, counting why. */
static __always_inline int sm_reject(enum sm_xlate why)
{
	sm_count(why == SM_XLATE_NO_BACKEND ? SM_CNT_CONNECT_NO_BACKEND : SM_CNT_MAP_ERROR, 1);
	bpf_set_retval(-SM_NO_BACKEND_ERRNO);
	return 0;
}

/* Is this a TCP connect to a port with HTTP rules of a destination (its set `pd`)? */
static __always_inline int sm_tcp_l7(struct bpf_sock_addr *ctx, const struct sm_policy_dst *pd, __be16 port)
{
	return pd && ctx->protocol == IPPROTO_TCP && sm_l7_port(pd, port);
}

/* The verdict of a steering attempt as a hook result: 1 to go on with *be, 0 refused. */
static __always_inline int sm_steer_result(enum sm_steer r)
{
	switch (r) {
	case SM_STEER_DONE:
	case SM_STEER_NONE: /* the proxy's own connect: it judged its client */
		return 1;
	case SM_STEER_REFUSE:
		return sm_l7_refuse();
	case SM_STEER_DENY:
		return sm_policy_reject();
	default:
		return sm_reject(SM_XLATE_ERROR); /* ECONNREFUSED, counted in map_errors */
	}
}

/*
 * The verdict on a translated connect, before its destination is rewritten: a service with HTTP
 * rules goes to the L7 proxy (*be becomes the proxy), or is refused when it cannot (fail closed);
 * so does one whose chosen backend port has HTTP rules;
 * any other connect is judged by the chosen backend's L4 policy. Returns 1 to go on with *be, 0
 * when refused (the errno is set and the refusal counted).
 */
static __always_inline int sm_admit(struct bpf_sock_addr *ctx, const struct sm_svc_key *key, struct sm_backend *be,
				    __u32 flags)
{
	struct sm_policy_dst *pd;
	struct sm_svc_key bk;

	if (flags & SM_SVC_F_L7)
		return sm_steer_result(sm_steer_to_proxy(ctx, key, be));
	pd = sm_policy_dst_of(be->addr, be->family);
	if (sm_tcp_l7(ctx, pd, be->port)) {
		/* A service without HTTP rules onto a backend port that has them (another service, a
		 * headless one): to the proxy as well, judged by the backend's rules. */
		__builtin_memset(&bk, 0, sizeof(bk));
		bk.addr[0] = be->addr[0];
		bk.addr[1] = be->addr[1];
		bk.addr[2] = be->addr[2];
		bk.addr[3] = be->addr[3];
		bk.port = be->port;
		bk.proto = IPPROTO_TCP;
		bk.family = be->family;
		return sm_steer_result(sm_steer_to_proxy(ctx, &bk, be));
	}
	return sm_policy_allows_pd(ctx, pd, be->port) ? 1 : sm_policy_reject();
}

/*
 * Is this caller's connect translated at all? Only for a workload the agent knows (its cgroup or
 * netns has an identity) and for the node's L7 proxy, unless the operator asked to translate every
 * socket of the meshed cgroup (SM_CFG_F_XLATE_ALL). Any other caller (a pod that is not enrolled,
 * one that runs an Istio sidecar) reaches a VIP untouched, as without the mesh; its direct
 * connects to pods with policies are still judged (it has no identity: fail closed).
 */
static __always_inline int sm_translates(struct bpf_sock_addr *ctx)
{
	struct sm_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&sm_config, &zero);
	if (cfg && (cfg->flags & SM_CFG_F_XLATE_ALL))
		return 1;
	if (sm_cfg_is_proxy(cfg))
		return 1;
	return sm_current_identity(ctx) != SM_IDENTITY_UNRESOLVED;
}

/*
 * A connect() starts from nothing: whatever an earlier connect of this socket left (a UDP socket
 * connected elsewhere before, a TCP connect that failed) is forgotten before this one is judged.
 */
static __always_inline void sm_connect_reset(struct bpf_sock_addr *ctx)
{
	struct sm_sock_state *st;

	if (!ctx->sk)
		return;
	st = bpf_sk_storage_get(&sm_sock_state, ctx->sk, 0, 0);
	if (st) {
		st->xlated = 0;
		st->steered = 0;
	}
}

/*
 * UDP flows (sm_udp_flows): a datagram to a peer this socket already has a flow with (it sent
 * there before, or the inbound program let that peer's datagram in) is not judged again; a new
 * flow is judged and then recorded, after translation (the peer as replies will show it). A
 * failure to record is counted: the flow is then judged again at its next datagram.
 */
static __always_inline int sm_udp_known(struct bpf_sock_addr *ctx, const __be32 *addr, __u8 family, __be16 port)
{
	struct sm_flow_key k;

	if (ctx->protocol != IPPROTO_UDP)
		return 0;
	sm_flow_key_fill(&k, bpf_get_socket_cookie(ctx), addr, family, port);
	return bpf_map_lookup_elem(&sm_udp_flows, &k) != NULL;
}

static __always_inline void sm_udp_record(struct bpf_sock_addr *ctx, const __be32 *addr, __u8 family, __be16 port)
{
	struct sm_flow_key k;
	__u32 one = 1;

	if (ctx->protocol != IPPROTO_UDP)
		return;
	sm_flow_key_fill(&k, bpf_get_socket_cookie(ctx), addr, family, port);
	if (bpf_map_lookup_elem(&sm_udp_flows, &k))
		return;
	if (bpf_map_update_elem(&sm_udp_flows, &k, &one, BPF_ANY))
		sm_count(SM_CNT_MAP_ERROR, 1);
}

/*
 * A connect()/sendmsg() to a destination that is not a service. A TCP port with HTTP rules (a
 * backend's, addressed by its pod IP) goes to the L7 proxy like a VIP with HTTP rules: returns 2
 * with *be the proxy. Anything else is judged by its L4 policy: 1 to go on unchanged, 0 refused.
 */
static __always_inline int sm_direct(struct bpf_sock_addr *ctx, const struct sm_svc_key *key, struct sm_backend *be)
{
	struct sm_policy_dst *pd;

	if (sm_udp_known(ctx, key->addr, key->family, key->port))
		return 1;
	pd = sm_policy_dst_of(key->addr, key->family);
	/* (A caller that is not translated is not steered either: the L4 check below refuses it.) */
	if (sm_tcp_l7(ctx, pd, key->port) && sm_translates(ctx)) {
		enum sm_steer r = sm_steer_to_proxy(ctx, key, be);

		if (r == SM_STEER_DONE)
			return 2;
		return sm_steer_result(r);
	}
	if (!sm_policy_allows_pd(ctx, pd, key->port))
		return sm_policy_reject();
	sm_udp_record(ctx, key->addr, key->family, key->port);
	return 1;
}

/*
 * Remember a translation for the way back. A connect() keeps it in the socket's own storage (freed
 * with the socket; getpeername() and a connected socket's recvmsg() read it); an unconnected
 * datagram in its pod's revnat table, for the replies.
 */
static __always_inline void sm_xlate_keep(struct bpf_sock_addr *ctx, const struct sm_backend *be,
					  const struct sm_svc_key *key, int connect)
{
	struct sm_sock_state *st;

	if (!connect) {
		sm_revnat_record(bpf_get_socket_cookie(ctx), bpf_get_netns_cookie(ctx), be, key);
		return;
	}
	st = ctx->sk ? bpf_sk_storage_get(&sm_sock_state, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : 0;
	if (!st) {
		sm_count(SM_CNT_MAP_ERROR, 1); /* getpeername() will show the backend */
		return;
	}
	st->orig[0] = key->addr[0];
	st->orig[1] = key->addr[1];
	st->orig[2] = key->addr[2];
	st->orig[3] = key->addr[3];
	st->orig_port = key->port;
	st->orig_family = key->family;
	st->xlated = 1;
}

static __always_inline int sm_fwd4(struct bpf_sock_addr *ctx, enum sm_counter ok_counter)
{
	struct sm_svc_key key;
	struct sm_backend be;
	enum sm_xlate res;
	__u32 flags = 0;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	if (ok_counter == SM_CNT_CONNECT_XLATE)
		sm_connect_reset(ctx);
	__builtin_memset(&key, 0, sizeof(key));
	key.addr[0] = ctx->user_ip4;
	key.port = (__be16)ctx->user_port; /* sin_port, zero-extended: low 16 bits are network order */
	key.proto = ctx->protocol;
	key.family = SM_AF_INET;

	res = sm_lb_xlate(&key, &be, &flags);
	if (res == SM_XLATE_NOT_SERVICE) {
		int r = sm_direct(ctx, &key, &be);

		if (r != 2)
			return r;
	} else {
		if (!sm_translates(ctx))
			return 1; /* to the VIP, untouched */
		if (res != SM_XLATE_DONE || be.family != SM_AF_INET)
			return sm_reject(res == SM_XLATE_DONE ? SM_XLATE_ERROR : res);
		if (!sm_admit(ctx, &key, &be, flags))
			return 0;
	}

	ctx->user_ip4 = be.addr[0];
	ctx->user_port = (__u32)be.port;
	sm_xlate_keep(ctx, &be, &key, ok_counter == SM_CNT_CONNECT_XLATE);
	sm_udp_record(ctx, be.addr, be.family, be.port);
	sm_count(ok_counter, 1);
	return 1;
}

/*
 * IPv6 sockets may address an IPv4 service through an IPv4-mapped address (::ffff:a.b.c.d): such a
 * connect is translated with the IPv4 tables and the backend written back in mapped form.
 */
static __always_inline int sm_fwd6(struct bpf_sock_addr *ctx, enum sm_counter ok_counter)
{
	struct sm_svc_key key;
	struct sm_backend be;
	enum sm_xlate res;
	__u32 flags = 0;
	__u32 a[4];
	int mapped;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	if (ok_counter == SM_CNT_CONNECT_XLATE)
		sm_connect_reset(ctx);
	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	mapped = sm_v4_mapped(a[0], a[1], a[2]);

	__builtin_memset(&key, 0, sizeof(key));
	if (mapped) {
		key.addr[0] = a[3];
		key.family = SM_AF_INET;
	} else {
		key.addr[0] = a[0];
		key.addr[1] = a[1];
		key.addr[2] = a[2];
		key.addr[3] = a[3];
		key.family = SM_AF_INET6;
	}
	key.port = (__be16)ctx->user_port;
	key.proto = ctx->protocol;

	res = sm_lb_xlate(&key, &be, &flags);
	if (res == SM_XLATE_NOT_SERVICE) {
		int r = sm_direct(ctx, &key, &be);

		if (r != 2)
			return r;
	} else {
		if (!sm_translates(ctx))
			return 1; /* to the VIP, untouched */
		if (res != SM_XLATE_DONE || be.family != key.family)
			return sm_reject(res == SM_XLATE_DONE ? SM_XLATE_ERROR : res);
		if (!sm_admit(ctx, &key, &be, flags))
			return 0;
	}

	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = be.addr[0];
	} else {
		ctx->user_ip6[0] = be.addr[0];
		ctx->user_ip6[1] = be.addr[1];
		ctx->user_ip6[2] = be.addr[2];
		ctx->user_ip6[3] = be.addr[3];
	}
	ctx->user_port = (__u32)be.port;
	sm_xlate_keep(ctx, &be, &key, ok_counter == SM_CNT_CONNECT_XLATE);
	sm_udp_record(ctx, be.addr, be.family, be.port);
	sm_count(ok_counter, 1);
	return 1;
}

/*
 * Backend -> VIP, for getpeername() (`peername`) and for the source of a received datagram. A
 * connected socket (TCP; UDP after connect()) answers from its own storage: the kernel gives a
 * connected UDP socket datagrams from its peer only, and getpeername() runs only on a connected
 * socket. An unconnected UDP socket answers from its pod's revnat table. The shared LRU is also
 * read for getpeername(): sockets translated by a datapath from before this one kept theirs there.
 */
static __always_inline struct sm_revnat_value *sm_rev_lookup(struct bpf_sock_addr *ctx, struct sm_revnat_value *buf,
							     const __be32 *addr, __u8 family, __be16 port, int peername)
{
	struct sm_sock_state *st;
	struct bpf_sock *sk = ctx->sk;

	if (sk && (peername || sk->state == BPF_TCP_ESTABLISHED)) {
		st = bpf_sk_storage_get(&sm_sock_state, sk, 0, 0);
		if (st && st->xlated) {
			buf->addr[0] = st->orig[0];
			buf->addr[1] = st->orig[1];
			buf->addr[2] = st->orig[2];
			buf->addr[3] = st->orig[3];
			buf->port = st->orig_port;
			buf->family = st->orig_family;
			return buf;
		}
		if (!peername)
			return 0; /* a connected socket that was not translated */
	}
	return sm_revnat_lookup(bpf_get_socket_cookie(ctx), bpf_get_netns_cookie(ctx), addr, family, port);
}

static __always_inline int sm_rev4(struct bpf_sock_addr *ctx, enum sm_counter ok_counter)
{
	struct sm_revnat_value *rv, buf;
	__be32 a[4] = { ctx->user_ip4, 0, 0, 0 };

	rv = sm_rev_lookup(ctx, &buf, a, SM_AF_INET, (__be16)ctx->user_port, ok_counter == SM_CNT_PEERNAME_REVNAT);
	if (!rv || rv->family != SM_AF_INET)
		return 1;
	ctx->user_ip4 = rv->addr[0];
	ctx->user_port = (__u32)rv->port;
	sm_count(ok_counter, 1);
	return 1;
}

static __always_inline int sm_rev6(struct bpf_sock_addr *ctx, enum sm_counter ok_counter)
{
	struct sm_revnat_value *rv, buf;
	__be32 a[4];
	__u8 family = SM_AF_INET6;
	int mapped;

	a[0] = ctx->user_ip6[0];
	a[1] = ctx->user_ip6[1];
	a[2] = ctx->user_ip6[2];
	a[3] = ctx->user_ip6[3];
	mapped = sm_v4_mapped(a[0], a[1], a[2]);
	if (mapped) {
		a[0] = a[3];
		a[1] = a[2] = a[3] = 0;
		family = SM_AF_INET;
	}
	rv = sm_rev_lookup(ctx, &buf, a, family, (__be16)ctx->user_port, ok_counter == SM_CNT_PEERNAME_REVNAT);
	if (!rv || rv->family != family)
		return 1;
	if (mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = rv->addr[0];
	} else {
		ctx->user_ip6[0] = rv->addr[0];
		ctx->user_ip6[1] = rv->addr[1];
		ctx->user_ip6[2] = rv->addr[2];
		ctx->user_ip6[3] = rv->addr[3];
	}
	ctx->user_port = (__u32)rv->port;
	sm_count(ok_counter, 1);
	return 1;
}

SEC("cgroup/connect4")
int sm_connect4(struct bpf_sock_addr *ctx)
{
	return sm_fwd4(ctx, SM_CNT_CONNECT_XLATE);
}

SEC("cgroup/connect6")
int sm_connect6(struct bpf_sock_addr *ctx)
{
	return sm_fwd6(ctx, SM_CNT_CONNECT_XLATE);
}

SEC("cgroup/sendmsg4")
int sm_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sm_fwd4(ctx, SM_CNT_UDP_XLATE);
}

SEC("cgroup/sendmsg6")
int sm_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sm_fwd6(ctx, SM_CNT_UDP_XLATE);
}

SEC("cgroup/recvmsg4")
int sm_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sm_rev4(ctx, SM_CNT_UDP_REVNAT);
}

SEC("cgroup/recvmsg6")
int sm_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sm_rev6(ctx, SM_CNT_UDP_REVNAT);
}

SEC("cgroup/getpeername4")
int sm_getpeername4(struct bpf_sock_addr *ctx)
{
	return sm_rev4(ctx, SM_CNT_PEERNAME_REVNAT);
}

SEC("cgroup/getpeername6")
int sm_getpeername6(struct bpf_sock_addr *ctx)
{
	return sm_rev6(ctx, SM_CNT_PEERNAME_REVNAT);
}
