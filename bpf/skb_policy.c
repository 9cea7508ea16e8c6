// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Inbound policy: a cgroup_skb/ingress program on the meshed cgroup sees every packet delivered
 * to a socket of a local pod, whatever sent it (a meshed pod, an unmeshed one, another node, a
 * raw socket). It judges new flows only:
 *   - TCP SYNs: one the destination's policy refuses is dropped before the listener creates a
 *     connection, so no payload reaches the application; established connections are never
 *     touched, and a policy change applies to the next SYN;
 *   - UDP datagrams that begin a flow (sm_udp_flows: a new (socket, peer) pair) to a destination
 *     with policies; a datagram of a flow already judged (either way) passes;
 *   - a TCP port with HTTP rules (SM_PDST_F_L7) takes connections from an L7 proxy's address only
 *     (SM_EP_F_PROXY), so the pod IP, the other family, another node or an unmeshed pod cannot
 *     reach it around the proxy.
 * IPv6 extension headers are walked (a bounded number). A packet to a destination with policies
 * that is none of these (SCTP, UDP-Lite, raw IP, a header chain too long to walk) is dropped:
 * not understood, so not let in. ICMP passes (the kernel answers it, not a pod's socket). The client sees its SYN
 * unanswered (a timeout, as with a firewall drop); meshed clients on any node are refused earlier
 * and clearly, at connect(), by connect4/6.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/sockmesh_types.h"
#include "include/maps.h"
#include "include/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Extension headers walked before giving up (the packet is then dropped if a policy applies). */
#define SM_IPV6_MAX_EXT 8

#ifndef IPPROTO_HOPOPTS
#define IPPROTO_HOPOPTS 0
#endif
#ifndef IPPROTO_ROUTING
#define IPPROTO_ROUTING 43
#endif
#ifndef IPPROTO_FRAGMENT
#define IPPROTO_FRAGMENT 44
#endif
#ifndef IPPROTO_DSTOPTS
#define IPPROTO_DSTOPTS 60
#endif
#ifndef IPPROTO_AH
#define IPPROTO_AH 51
#endif

struct sm_pkt {
	__be32 src[4];
	__be32 dst[4];
	__u32 l4_off; /* offset of the transport header */
	__u8 family;
	__u8 proto;   /* IPPROTO_*; 255 (reserved) when the transport header could not be found */
};

#define SM_PROTO_UNKNOWN 255

/* The IPv6 header chain up to the transport header; 0 when it is not found within the bound. */
static __always_inline int sm_walk_ipv6(struct __sk_buff *skb, __u8 nexthdr, struct sm_pkt *p)
{
	__u32 off = sizeof(struct ipv6hdr);
	__u8 h[4];
	int i;

#pragma unroll
	for (i = 0; i < SM_IPV6_MAX_EXT; i++) {
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return 0;
			nexthdr = h[0];
			off += ((__u32)h[1] + 1) * 8;
			break;
		case IPPROTO_AH:
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return 0;
			nexthdr = h[0];
			off += ((__u32)h[1] + 2) * 4;
			break;
		case IPPROTO_FRAGMENT:
			/* Reassembled before sockets see it; a fragment that is not the first has no
			 * transport header to judge. */
			if (bpf_skb_load_bytes(skb, off, h, 4) || ((h[2] << 8 | h[3]) & 0xfff8))
				return 0;
			nexthdr = h[0];
			off += 8;
			break;
		default:
			p->proto = nexthdr;
			p->l4_off = off;
			return 1;
		}
	}
	return 0;
}

/* Addresses and transport protocol; 0 when the packet is not IP (left alone). */
static __always_inline int sm_parse(struct __sk_buff *skb, struct sm_pkt *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->proto = SM_PROTO_UNKNOWN;
	/* cgroup_skb data starts at the network header. */
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		p->src[0] = ip.saddr;
		p->dst[0] = ip.daddr;
		p->family = SM_AF_INET;
		/* Reassembled before sockets see it, as for IPv6. */
		if (!(ip.frag_off & bpf_htons(0x1fff))) {
			p->proto = ip.protocol;
			p->l4_off = ip.ihl * 4;
		}
		return 1;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		p->family = SM_AF_INET6;
		sm_walk_ipv6(skb, ip6.nexthdr, p);
		return 1;
	}
	return 0;
}

/* 1: let a new flow from p->src to dst_port in; 0: drop it (counted). */
static __always_inline int sm_inbound(const struct sm_policy_dst *pd, const struct sm_pkt *p, __be16 dst_port)
{
	struct sm_local_ep *ep;
	struct sm_ip_key k;
	__u32 rule = 0;

	sm_ip_key_fill(&k, p->src, p->family);
	ep = bpf_map_lookup_elem(&sm_ip_identity, &k);
	/* Kubelet probes: TCP from the node's own probe addresses is not judged. */
	if (p->proto == IPPROTO_TCP && ep && (ep->flags & SM_EP_F_PROBE))
		return 1;
	/* HTTP rules are about TCP: UDP to the same port number is judged by L4 alone. */
	if (p->proto == IPPROTO_TCP && sm_l7_port(pd, dst_port)) {
		if (ep && (ep->flags & SM_EP_F_PROXY))
			return 1;
	} else if (sm_policy_verdict_in_set(pd->set, dst_port, ep ? ep->identity : 0, &rule) == SM_VERDICT_ALLOW) {
		return 1;
	}
	sm_count(SM_CNT_POLICY_DENY_INGRESS, 1);
	return 0;
}

SEC("cgroup_skb/ingress")
int sm_ingress(struct __sk_buff *skb)
{
	struct sm_policy_dst *pd;
	struct bpf_sock *sk;
	struct sm_pkt p;

	/*
	 * Established TCP is decided by its SYN: a packet for an established TCP socket passes before
	 * anything is parsed (the SYN that opens a connection is delivered to a listener), so the
	 * program costs established flows a few loads and one helper call.
	 */
	sk = skb->sk;
	if (sk) {
		sk = bpf_sk_fullsock(sk);
		if (sk && sk->protocol == IPPROTO_TCP && sk->state == BPF_TCP_ESTABLISHED)
			return 1;
	}
	if (!sm_parse(skb, &p))
		return 1;
	if (p.proto == IPPROTO_TCP) {
		struct tcphdr th;

		/* Established traffic is decided by its SYN: no map lookup on the data path. */
		if (bpf_skb_load_bytes(skb, p.l4_off, &th, sizeof(th)) == 0 && (!th.syn || th.ack))
			return 1;
		pd = sm_policy_dst_of(p.dst, p.family);
		if (!pd)
			return 1;
		if (bpf_skb_load_bytes(skb, p.l4_off, &th, sizeof(th)))
			goto drop; /* truncated: nothing to judge */
		return sm_inbound(pd, &p, th.dest);
	}
	if (p.proto == IPPROTO_UDP) {
		struct sm_flow_key fk;
		struct udphdr uh;
		__u32 one = 1;

		pd = sm_policy_dst_of(p.dst, p.family);
		/* Neither end has policies: nothing to judge, and no reply of ours will be judged. */
		if (!pd && !sm_policy_dst_of(p.src, p.family))
			return 1;
		if (bpf_skb_load_bytes(skb, p.l4_off, &uh, sizeof(uh)))
			goto drop;
		sm_flow_key_fill(&fk, bpf_get_socket_cookie(skb), p.src, p.family, uh.source);
		if (bpf_map_lookup_elem(&sm_udp_flows, &fk))
			return 1; /* a flow of this socket, judged at its first datagram */
		if (pd && !sm_inbound(pd, &p, uh.dest))
			return 0;
		/* Let in: this socket's replies belong to the flow and are not judged again outbound. */
		if (bpf_map_update_elem(&sm_udp_flows, &fk, &one, BPF_ANY))
			sm_count(SM_CNT_MAP_ERROR, 1);
		return 1;
	}
	/* ICMP errors and echo are handled by the kernel, not by a pod's socket (ping sockets aside). */
	if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6)
		return 1;
	/* SCTP, UDP-Lite, raw IP, or a header chain not walked: not understood, so dropped when the
	 * destination has policies. */
	pd = sm_policy_dst_of(p.dst, p.family);
	if (!pd)
		return 1;
drop:
	sm_count(SM_CNT_POLICY_DENY_INGRESS, 1);
	return 0;
}
