/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structs that cross the kernel/user boundary, defined once.
 *
 * Their TypeScript codecs live in abi/codecs.ts; test/btf-layout.test.ts reads the
 * BTF of the compiled objects and fails on any size or offset drift, so edit both together.
 *
 * Byte order is part of the type: __be16/__be32 fields hold network order exactly as the socket
 * layer does (sin_port, sin_addr). Everything else is host order. There is no implicit padding in
 * any key: hash-map keys are compared byte for byte, so every pad byte is named and zeroed.
 */
#ifndef SOCKMESH_TYPES_H
#define SOCKMESH_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

#define SM_AF_INET 2   /* AF_INET */
#define SM_AF_INET6 10 /* AF_INET6 */

/*
 * An IPv4 address is stored in addr[0] with addr[1..3] zero; an IPv6 address fills addr[0..3].
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, seen on dual-stack sockets) are always normalised to
 * the IPv4 form before they are used as a key, so the two views of one connection agree.
 */

/* sm_services: (VIP, port, protocol) -> service. */
struct sm_svc_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* SM_AF_INET or SM_AF_INET6 */
};

/* Value of sm_l7_ready: the version of the proxy's table that acknowledged the destination. */
struct sm_l7_ready_value {
	__u32 version;
};

/* Service flags (sm_svc_value.flags). */
#define SM_SVC_F_NONE 0u
#define SM_SVC_F_L7 1u /* HTTP rules apply: TCP connects are steered to the node's L7 proxy */

/*
 * Updated in place under `lock` (BPF_F_LOCK from the agent, bpf_spin_lock in the programs), so a
 * reader never sees a torn value and a switch never frees the element a reader holds. The VIP key
 * is repeated in the value: a reader that raced with the DELETE of its service (whose element may
 * be recycled at once for another service, kernel >= 6.1 bpf_mem_alloc) notices the mismatch.
 */
struct sm_svc_value {
	struct bpf_spin_lock lock;
	__u32 svc_id;     /* stable id, allocated by the agent, also the slot-key prefix */
	__u32 gen;        /* generation of the backend slots currently in force */
	__u32 slot_count; /* 0: the service has no usable backend -> the connect fails */
	__u32 flags;      /* SM_SVC_F_* */
	__be32 vip[4];    /* = the key, see above */
	__be16 vip_port;
	__u8 vip_proto;
	__u8 vip_family;
};

/*
 * sm_backend_slots: (service, generation, slot) -> backend. A service's weighted backend table is
 * written as a whole new generation, then the service entry is switched to it in one update, so a
 * connect sees either the old table or the new one, never a mix (see mesh-agent/datapath/reconciler.ts).
 */
struct sm_slot_key {
	__u32 svc_id;
	__u32 gen;
	__u32 slot;
};

struct sm_backend {
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 flags; /* reserved, zero */
};

/*
 * Unconnected UDP: (socket cookie, backend address, backend port) -> the VIP the socket sent to,
 * for the source of replies (recvmsg). One LRU per pod (sm_revnat_pods, by netns cookie), so one
 * pod's churn only ever evicts its own entries; sm_revnat holds those of sockets in a namespace
 * the agent has not given a table (and, read only, those of sockets translated before an upgrade).
 * TCP and connected UDP keep their translation in socket-local storage (struct sm_sock_state).
 */
struct sm_revnat_key {
	__u64 cookie;
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad[5];
};

struct sm_revnat_value {
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad;
};

/* sm_local_eps: IP of a meshed pod on this node -> what we know about it. */
struct sm_ip_key {
	__be32 addr[4];
	__u8 family;
	__u8 pad[3];
};

struct sm_local_ep {
	__u32 identity; /* numeric workload identity (0 until identities exist) */
	__u32 flags;    /* SM_EP_F_* (sm_ip_identity); zero elsewhere */
};

/*
 * sm_ip_identity flags. SM_EP_F_PROXY: the address of a sockmesh L7 proxy (this node's or a peer
 * node's). Only such a source may open a connection to a port with HTTP rules (SM_PDST_F_L7):
 * the proxy judged the client's identity and its requests before it connected.
 */
#define SM_EP_F_PROXY 1u
/*
 * SM_EP_F_PROBE: an address of the node itself that kubelet probes come from (`--probe-source`).
 * A TCP SYN from it is let into every port of a local pod unjudged, as ztunnel lets kubelet
 * probes through (Istio SNATs them to 169.254.7.127 and exempts that address in the pod).
 */
#define SM_EP_F_PROBE 2u

/*
 * sm_sockhash key: one TCP socket, seen from its own side, in its own network namespace (netns
 * cookie). The namespace is part of the key so that a socket can only ever be found by a peer
 * that looks for it in the namespace the agent knows as the owner of its address
 * (sm_local_netns): a socket with the same addresses in another namespace (a pod that put a
 * victim's IPs on its own loopback, say in a user namespace) is another key, never a victim's peer.
 */
struct sm_sock_key {
	__u64 netns;
	__be32 local[4];
	__be32 remote[4];
	__be16 local_port;
	__be16 remote_port;
	__u8 family;
	__u8 pad[3];
};

/* Per-socket state, kept in socket-local storage (freed with the socket). */
#define SM_REDIR_UNDECIDED 0
#define SM_REDIR_ON 1
#define SM_REDIR_OFF 2

struct sm_sock_state {
	__u32 redir;   /* SM_REDIR_*: the sk_msg redirect decision */
	__u32 steered; /* 1: connect() was steered to the L7 proxy; orig_* is where it was going */
	__be32 orig[4];
	__be16 orig_port;
	__u8 orig_family;
	/*
	 * 1: the last connect() was translated (to a backend or to the proxy): orig_* is the address
	 * it asked for, which getpeername() shows (TCP and connected UDP; the translation lives and
	 * dies with the socket, so no other socket's churn can evict it).
	 */
	__u8 xlated;
	__u32 pad;
	/* Set by sockops for a local pair: the netns cookie the peer socket is keyed by. */
	__u64 peer_netns;
};

/*
 * sm_identities: which SPIFFE id each identity number stands for, on this node. Written and read by
 * the agent only (no program looks at it): it is pinned so that numbers survive agent restarts and
 * are never given to another name while anything may still carry them. The value is the first 16
 * bytes of the SHA-256 of the SPIFFE id (names can be longer than a map value should be).
 */
struct sm_identity_key {
	__u32 identity;
};

struct sm_identity_name {
	__u8 sha256[16];
};

/*
 * sm_udp_flows: the UDP flows of meshed sockets, (socket cookie, peer address, peer port), after
 * translation (the backend, not the VIP). A flow is judged once, at its first datagram, as a TCP
 * connection is at its SYN: outbound at sendmsg/connect (then recorded), or inbound at the pod
 * (recorded when allowed, so the pod's replies are not judged against the sender's own policy).
 * LRU: a flow evicted is judged again at its next datagram.
 */
struct sm_flow_key {
	__u64 cookie;
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad[5];
};

/* sm_config (one entry): where the node's L7 proxy listens, and which cgroup it runs in. */
#define SM_CFG_F_PROXY4 1u
#define SM_CFG_F_PROXY6 2u
/*
 * Translate (and steer) connects of every socket in the meshed cgroup, enrolled pod or not
 * (kube-proxy replacement style). Without it only callers the agent knows as a workload (their
 * cgroup or netns has an identity) are translated; any other socket is left to the node's own
 * service handling, as Istio ambient leaves pods it does not capture (a pod with a sidecar).
 */
#define SM_CFG_F_XLATE_ALL 4u

struct sm_config {
	__u64 proxy_cgroup_id; /* connects from this cgroup are never steered (the proxy's own) */
	__be32 proxy4;
	__be32 proxy6[4];
	__be16 proxy_port;
	__u8 flags; /* SM_CFG_F_* */
	__u8 pad;
	/* The proxy handing its listening sockets to its successor (proxy_cgroup_id) while it drains
	 * its own connections: exempt as well, 0 outside a handover. */
	__u64 proxy_cgroup_prev;
};

/*
 * sm_steer: a connection steered to the L7 proxy, keyed by the client's address as the proxy sees
 * its peer -> where the client was going and who it is. Written by sockops when the client's
 * connect completes, read by the proxy (never trusted from the request itself).
 */
struct sm_steer_key {
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad;
};

struct sm_steer_value {
	__be32 orig[4];
	__be16 orig_port;
	__u8 orig_family;
	__u8 pad;
	__u32 identity; /* sm_local_ep.identity of the client's IP, 0 if unknown */
};

/*
 * L4 policy, compiled by the agent (mesh-agent/datapath/policy.ts). A destination IP with policies
 * has a policy set (sm_policy_dst); the verdict for (set, source identity, destination port) is
 * looked up most specific first: (set, id, port), (set, id, 0), (set, 0, port), (set, 0, 0).
 * Identity 0 stands for every identity without entries of its own; port 0 for every port without
 * entries of its own. The agent always writes (set, 0, 0).
 */
#define SM_VERDICT_ALLOW 1
#define SM_VERDICT_DENY 2
#define SM_VERDICT_L7 3 /* only in rows of SM_IDENTITY_L7_PORTS: the port has HTTP rules */

/*
 * Ports with HTTP rules. A destination (backend pod IP) that serves a service with HTTP rules has
 * SM_PDST_F_L7 set, and its set has a row (set, SM_IDENTITY_L7_PORTS, port) = SM_VERDICT_L7 for
 * each such port. Connections to those ports are refused unless they come from the L7 proxy
 * (outbound: the proxy's cgroup; inbound: an SM_EP_F_PROXY source address). No workload has this
 * identity number (the agent never allocates it).
 */
#define SM_PDST_F_L7 1u
#define SM_IDENTITY_L7_PORTS 0xffffffffu

/*
 * The identity of a caller inside the meshed cgroup whose pod cgroup the agent has not mapped (a
 * pod it does not know yet, or not at all). It could be any workload, so its rows are compiled to
 * fail closed: a DENY that names principals or namespaces matches it, such an ALLOW does not.
 * (Identity 0 is a source the mesh does not know at all, judged as Istio judges plaintext: rules
 * that name principals or namespaces do not match it.)
 */
#define SM_IDENTITY_UNRESOLVED 0xfffffffeu

struct sm_policy_dst {
	__u32 set;
	__u32 flags; /* SM_PDST_F_* */
};

struct sm_policy_key {
	__u32 set;
	__u32 identity;
	__be16 port;
	__u8 pad[2];
};

struct sm_policy_value {
	__u8 verdict; /* SM_VERDICT_* */
	__u8 pad[3];
	__u32 rule; /* which policy decided, for `sockmesh trace` and logs */
};

/* Indexes of the per-CPU counter array sm_counters. Keep in step with COUNTER_NAMES in codecs.ts. */
enum sm_counter {
	SM_CNT_CONNECT_XLATE = 0,  /* connect() to a VIP translated to a backend */
	SM_CNT_CONNECT_NO_BACKEND, /* connect()/sendmsg() to a VIP with no usable backend: rejected */
	SM_CNT_UDP_XLATE,          /* unconnected UDP datagram to a VIP translated */
	SM_CNT_UDP_REVNAT,         /* UDP reply source rewritten back to the VIP */
	SM_CNT_PEERNAME_REVNAT,    /* getpeername() answered with the VIP */
	SM_CNT_SOCK_LOCAL_PAIR,    /* established socket with both ends local: added to sm_sockhash */
	SM_CNT_SOCK_NOT_LOCAL,     /* established socket with a non-local end: normal path */
	SM_CNT_MSG_REDIRECT,       /* sendmsg redirected to the peer socket */
	SM_CNT_MSG_REDIRECT_BYTES, /* bytes in those messages */
	SM_CNT_MSG_FALLBACK,       /* sendmsg on a local pair that took the normal TCP path */
	SM_CNT_MAP_ERROR,          /* a map update the datapath needed failed */
	SM_CNT_L7_STEERED,         /* connect() to a service with HTTP rules steered to the L7 proxy */
	SM_CNT_POLICY_DENY_CONNECT, /* connect()/sendmsg() refused by L4 policy (EACCES) */
	SM_CNT_POLICY_DENY_INGRESS, /* inbound SYN (or UDP datagram) to a local pod dropped by L4 policy */
	SM_CNT_MAX,
};

#endif /* SOCKMESH_TYPES_H */
