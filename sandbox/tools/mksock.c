// SPDX-License-Identifier: Apache-2.0
/*
 * mksock: try to make one socket of each kind the tests ask about and report what socket(2) said,
 * one JSON object per kind: {"kind":"raw4","ok":true} or {"kind":"sctp4","ok":false,"errno":"EPERM"}.
 * Node cannot make raw, SCTP or UDP-Lite sockets; the tests run this inside and outside the mesh.
 *
 *   mksock KIND...   (tcp4 tcp6 udp4 udp6 ping4 ping6 raw4 raw6 rawip4 sctp4 sctp6 sctpseq4
 *                     udplite4 udplite6 mptcp4)
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

struct kind {
	const char *name;
	int family, type, protocol;
};

static const struct kind kinds[] = {
	{ "tcp4", AF_INET, SOCK_STREAM, IPPROTO_TCP },
	{ "tcp6", AF_INET6, SOCK_STREAM, IPPROTO_TCP },
	{ "udp4", AF_INET, SOCK_DGRAM, IPPROTO_UDP },
	{ "udp6", AF_INET6, SOCK_DGRAM, IPPROTO_UDP },
	{ "ping4", AF_INET, SOCK_DGRAM, IPPROTO_ICMP },
	{ "ping6", AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6 },
	{ "raw4", AF_INET, SOCK_RAW, IPPROTO_TCP },
	{ "raw6", AF_INET6, SOCK_RAW, IPPROTO_TCP },
	{ "rawip4", AF_INET, SOCK_RAW, IPPROTO_RAW },
	{ "sctp4", AF_INET, SOCK_STREAM, IPPROTO_SCTP },
	{ "sctp6", AF_INET6, SOCK_STREAM, IPPROTO_SCTP },
	{ "sctpseq4", AF_INET, SOCK_SEQPACKET, IPPROTO_SCTP },
	{ "udplite4", AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE },
	{ "udplite6", AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE },
	{ "mptcp4", AF_INET, SOCK_STREAM, IPPROTO_MPTCP },
};

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
	case ESOCKTNOSUPPORT: return "ESOCKTNOSUPPORT";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EINVAL: return "EINVAL";
	default: return "EOTHER";
	}
}

int main(int argc, char **argv)
{
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		const struct kind *k = NULL;

		for (size_t j = 0; j < sizeof(kinds) / sizeof(kinds[0]); j++)
			if (!strcmp(kinds[j].name, argv[i]))
				k = &kinds[j];
		if (!k) {
			fprintf(stderr, "mksock: unknown kind %s\n", argv[i]);
			rc = 2;
			continue;
		}
		int fd = socket(k->family, k->type, k->protocol);
		if (fd >= 0) {
			printf("{\"kind\":\"%s\",\"ok\":true}\n", k->name);
			close(fd);
		} else {
			printf("{\"kind\":\"%s\",\"ok\":false,\"errno\":\"%s\"}\n", k->name, errname(errno));
		}
	}
	return rc;
}
