// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Same-node redirection. sockops puts every established TCP socket whose two ends are meshed pods
 * of this node into sm_sockhash, keyed by its network namespace and its addresses; the sk_msg
 * program attached to that sockhash moves each sendmsg() straight to the peer socket's receive
 * queue (BPF_F_INGRESS), skipping TCP/IP below the socket. The kernel removes a socket from the
 * sockhash when it closes (sock_map_close/unhash), so no entry outlives its socket.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "include/sockmesh_types.h"
#include "include/maps.h"
#include "include/sock_key.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SM_TCP_FLAG_SYN 0x02
#define SM_TCPOPT_FASTOPEN 34
#define SM_TCPOPT_EXP 254

/* The netns cookie the agent registered for a local pod's address (sm_local_netns), 0 if none. */
static __always_inline __u64 sm_owner_netns(const __be32 *addr, __u8 family)
{
	struct sm_ip_key k;
	__u64 *ns;

	sm_ip_key_fill(&k, addr, family);
	ns = bpf_map_lookup_elem(&sm_local_netns, &k);
	return ns ? *ns : 0;
}

/* A steered client socket's record is keyed by its own address: what the proxy sees as its peer. */
static __always_inline void sm_steer_key_of(struct sm_steer_key *k, const struct sm_sock_key *key)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr[0] = key->local[0];
	k->addr[1] = key->local[1];
	k->addr[2] = key->local[2];
	k->addr[3] = key->local[3];
	k->port = key->local_port;
	k->family = key->family;
}

/*
 * A client socket that connect4/6 steered to the L7 proxy is up: publish where it was going and
 * who it is, keyed by its own address (what the proxy sees as its peer).
 */
static __always_inline void sm_publish_steer(struct bpf_sock_ops *skops, const struct sm_sock_key *key)
{
	struct sm_steer_value v;
	struct sm_steer_key k;
	struct sm_sock_state *st;
	struct sm_local_ep *ep;
	struct sm_ip_key ik;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	st = bpf_sk_storage_get(&sm_sock_state, sk, 0, 0);
	if (!st || !st->steered)
		return;
	sm_steer_key_of(&k, key);
	__builtin_memset(&v, 0, sizeof(v));
	v.orig[0] = st->orig[0];
	v.orig[1] = st->orig[1];
	v.orig[2] = st->orig[2];
	v.orig[3] = st->orig[3];
	v.orig_port = st->orig_port;
	v.orig_family = st->orig_family;
	sm_ip_key_fill(&ik, key->local, key->family);
	ep = bpf_map_lookup_elem(&sm_local_eps, &ik);
	if (ep)
		v.identity = ep->identity;
	if (bpf_map_update_elem(&sm_steer, &k, &v, BPF_ANY)) {
		sm_count(SM_CNT_MAP_ERROR, 1);
		return;
	}
	/* Told when this socket closes (steered sockets only): its record goes with it. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/*
 * A steered client socket is closing: delete its record, so that a later socket on the same
 * address and port (the pod's IP given to another pod, a port reused) never inherits the old
 * destination and identity. The proxy also deletes a record once it has read it.
 */
static __always_inline void sm_forget_steer(struct bpf_sock_ops *skops)
{
	struct sm_sock_key key;
	struct sm_steer_key k;

	if (sm_key_from_sockops(skops, &key))
		return;
	sm_steer_key_of(&k, &key);
	bpf_map_delete_elem(&sm_steer, &k); /* absent already: the proxy took it */
}

/*
 * Did this client use TCP Fast Open? Its SYN carried data (a data segment went out before the
 * handshake completed), or the SYN-ACK answers a cookie request with a Fast Open option (kind 34,
 * or the experimental 254 with magic 0xF989), which only a Fast Open SYN asks for.
 */
static __always_inline int sm_fast_open_client(struct bpf_sock_ops *skops)
{
	/* Room for the longest option (40 bytes): a shorter buffer fails with ENOSPC on a cookie. */
	__u8 opt[40] = { SM_TCPOPT_FASTOPEN };
	__u8 exp[40] = { SM_TCPOPT_EXP, 4, 0xF9, 0x89 };

	if (skops->data_segs_out > 0)
		return 1;
	if (bpf_load_hdr_opt(skops, opt, sizeof(opt), 0) > 0)
		return 1;
	return bpf_load_hdr_opt(skops, exp, sizeof(exp), 0) > 0;
}

SEC("sockops")
int sm_sockops(struct bpf_sock_ops *skops)
{
	struct sm_sock_state *st;
	struct sm_sock_key key;
	__u64 own, peer;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			sm_forget_steer(skops);
		return 1;
	default:
		return 1;
	}
	/*
	 * A TCP Fast Open child: the kernel runs this callback from tcp_fastopen_create_child(), on
	 * the SYN itself and before the SYN's data is queued (so bytes_received is 0 here, whatever
	 * the SYN carried). Redirected bytes would overtake that data, still in the TCP receive
	 * queue: such a socket stays on TCP, and so does its peer (its first message finds no peer in
	 * the sockhash). Any other passive socket is reported on the handshake's final ACK, never on
	 * a SYN. (Not the state: every passive socket is still SYN_RECV here, tcp_init_transfer()
	 * runs before the switch to ESTABLISHED.)
	 */
	if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB && ((skops->skb_tcp_flags & SM_TCP_FLAG_SYN) || skops->bytes_received > 0)) {
		sm_count(SM_CNT_MSG_FALLBACK, 1);
		return 1;
	}
	if (sm_key_from_sockops(skops, &key))
		return 1;
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		sm_publish_steer(skops, &key);
	/*
	 * A local pair: this socket lives in the namespace the agent registered for its own address,
	 * and the peer's address is registered to a local pod's namespace, where the peer is looked
	 * up (its key carries that namespace). An address is not enough: any pod that can get
	 * CAP_NET_ADMIN in some namespace of its own (a user namespace will do) can put a victim's
	 * addresses on its loopback, but its sockets carry its own namespace and are nobody's peer.
	 */
	own = bpf_get_netns_cookie(skops);
	peer = sm_owner_netns(key.remote, key.family);
	if (!peer || sm_owner_netns(key.local, key.family) != own) {
		sm_count(SM_CNT_SOCK_NOT_LOCAL, 1);
		return 1;
	}
	/*
	 * A Fast Open client: its first bytes went, or will go, through TCP (in the SYN, or queued
	 * behind a SYN that asked for a cookie), outside sk_msg; later redirected bytes would
	 * overtake them. Such a socket stays on TCP.
	 * (Only for a local pair: the option search is not paid by connections that leave the node.)
	 */
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && sm_fast_open_client(skops)) {
		sm_count(SM_CNT_MSG_FALLBACK, 1);
		return 1;
	}
	/* Where sk_msg will look for the peer; without it the socket stays on TCP. */
	st = skops->sk ? bpf_sk_storage_get(&sm_sock_state, skops->sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : 0;
	if (!st) {
		sm_count(SM_CNT_MAP_ERROR, 1);
		return 1;
	}
	st->peer_netns = peer;
	key.netns = own;
	if (bpf_sock_hash_update(skops, &sm_sockhash, &key, BPF_NOEXIST)) {
		sm_count(SM_CNT_MAP_ERROR, 1);
		return 1;
	}
	sm_count(SM_CNT_SOCK_LOCAL_PAIR, 1);
	return 1;
}

/*
 * The redirect decision is taken once per socket, at its first message, and then kept:
 *  - peer in the sockhash at the first message -> every message is redirected;
 *  - peer not there yet (the client may write before the server's PASSIVE_ESTABLISHED ran) ->
 *    every message takes the normal TCP path.
 * Mixing the two on one socket could reorder bytes: a redirected message is read from the peer's
 * psock queue before older bytes still in its TCP receive queue. A server's first send always
 * finds its client (the client was added when its connect completed), so replies are redirected.
 */
SEC("sk_msg")
int sm_sk_msg(struct sk_msg_md *msg)
{
	struct sm_sock_state *st;
	struct sm_sock_key peer;
	__u32 size = msg->size;
	long verdict;

	if (!msg->sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&sm_sock_state, msg->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		sm_count(SM_CNT_MAP_ERROR, 1);
		return SK_PASS;
	}
	if (st->redir == SM_REDIR_OFF) {
		sm_count(SM_CNT_MSG_FALLBACK, 1);
		return SK_PASS;
	}
	if (!st->peer_netns || sm_peer_key_from_msg(msg, st->peer_netns, &peer)) {
		st->redir = SM_REDIR_OFF;
		sm_count(SM_CNT_MSG_FALLBACK, 1);
		return SK_PASS;
	}
	verdict = bpf_msg_redirect_hash(msg, &sm_sockhash, &peer, BPF_F_INGRESS);
	if (verdict == SK_PASS) {
		st->redir = SM_REDIR_ON;
		sm_count(SM_CNT_MSG_REDIRECT, 1);
		sm_count(SM_CNT_MSG_REDIRECT_BYTES, size);
		return SK_PASS;
	}
	/*
	 * Peer not found. Before any redirect: latch to the normal path. After redirects: the peer
	 * closed; the normal path gives the application TCP's own answer (RST) for a closed peer.
	 */
	if (st->redir == SM_REDIR_UNDECIDED)
		st->redir = SM_REDIR_OFF;
	sm_count(SM_CNT_MSG_FALLBACK, 1);
	return SK_PASS;
}
