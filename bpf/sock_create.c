// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket creation in the meshed cgroup: only the sockets the other hooks can judge are made.
 *
 * Policy is judged at connect()/sendmsg() (sock_lb.c) for TCP and UDP, and at the destination pod
 * by the inbound program (skb_policy.c) for every packet. A raw socket skips the first entirely
 * and, with IP_HDRINCL (settable on any raw socket), can write a source address of its choosing
 * that the second would trust; SCTP, UDP-Lite, MPTCP and the rest have no socket hook of ours at
 * all. So inside the mesh an AF_INET/AF_INET6 socket is made only if it is
 *   - a stream socket for TCP, or
 *   - a datagram socket for UDP, or for ICMP/ICMPv6 ("ping" sockets: no ports, no forged headers);
 * anything else fails with EPERM, which is also what a process without CAP_NET_RAW gets for a raw
 * socket. AF_PACKET sockets never reach this hook (it runs for the inet families only): their
 * frames are judged by the inbound program at the destination, by source address (README, threat
 * model).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "include/sockmesh_types.h"
#include "include/maps.h" /* none used; declared so every object shares the same pinned set and sizes */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef SOCK_DGRAM
#define SOCK_DGRAM 2
#endif
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

SEC("cgroup/sock_create")
int sm_sock_create(struct bpf_sock *sk)
{
	if (sk->family != SM_AF_INET && sk->family != SM_AF_INET6)
		return 1;
	if (sk->type == SOCK_STREAM && sk->protocol == IPPROTO_TCP)
		return 1;
	if (sk->type == SOCK_DGRAM &&
	    (sk->protocol == IPPROTO_UDP || sk->protocol == IPPROTO_ICMP || sk->protocol == IPPROTO_ICMPV6))
		return 1;
	return 0; /* EPERM */
}
