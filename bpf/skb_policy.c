// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Inbound L4 policy: a cgroup_skb/ingress program on the meshed cgroup sees every packet delivered
 * to a socket of a local pod. It judges only TCP SYNs (new connections): one from a source the
 * destination's policy denies is dropped before the listener creates a connection, so no payload
 * ever reaches the application; established connections are never touched, and a policy change
 * applies to the next SYN. The client sees its SYN unanswered (a timeout, as with a firewall drop);
 * meshed clients on any node are refused earlier and clearly, at connect(), by connect4/6.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "include/sockmesh_types.h"
#include "include/maps.h"
#include "include/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline __u32 sm_ip_identity_of(const __be32 *addr, __u8 family)
{
	struct sm_local_ep *ep;
	struct sm_ip_key k;

	sm_ip_key_fill(&k, addr, family);
	ep = bpf_map_lookup_elem(&sm_ip_identity, &k);
	return ep ? ep->identity : 0;
}

SEC("cgroup_skb/ingress")
int sm_ingress(struct __sk_buff *skb)
{
	__be32 src[4] = {}, dst[4] = {};
	struct tcphdr th;
	__u32 off, rule = 0;
	__u8 family;

	/* cgroup_skb data starts at the network header. */
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP)
			return 1;
		src[0] = ip.saddr;
		dst[0] = ip.daddr;
		off = ip.ihl * 4;
		family = SM_AF_INET;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		/* TCP right after the fixed header; extension headers are left alone (passed). */
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) || ip6.nexthdr != IPPROTO_TCP)
			return 1;
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
		off = sizeof(ip6);
		family = SM_AF_INET6;
	} else {
		return 1;
	}
	if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)))
		return 1;
	if (!th.syn || th.ack)
		return 1;
	if (sm_policy_verdict(dst, family, th.dest, sm_ip_identity_of(src, family), &rule) == SM_VERDICT_ALLOW)
		return 1;
	sm_count(SM_CNT_POLICY_DENY_INGRESS, 1);
	return 0;
}
