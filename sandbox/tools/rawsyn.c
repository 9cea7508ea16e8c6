// SPDX-License-Identifier: Apache-2.0
/*
 * rawsyn: send one hand-made IPv6 TCP SYN from a raw socket, optionally behind a hop-by-hop
 * options header, and report what came back: {"result":"synack"|"rst"|"timeout"}. Used by the
 * tests (inside a sandbox pod's network namespace) to show that the inbound program judges SYNs
 * whatever headers precede the TCP header. Needs CAP_NET_RAW, which the tests have as root.
 *
 *   rawsyn --src IPV6 --dst IPV6 --port N [--hbh] [--timeout-ms T]
 *
 * The sending kernel has no socket for the SYN-ACK and answers it with a RST; that is fine, only
 * whether a SYN-ACK arrived matters.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IPV6_HDRINCL
#define IPV6_HDRINCL 36
#endif

static void die(const char *what)
{
	printf("{\"error\":\"%s: %s\"}\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: rawsyn --src IPV6 --dst IPV6 --port N [--hbh] [--timeout-ms T]\n");
	exit(2);
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
	struct in6_addr src, dst;
	int have_src = 0, have_dst = 0, hbh = 0, port = 0;
	long timeout_ms = 2000;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--src") && i + 1 < argc)
			have_src = inet_pton(AF_INET6, argv[++i], &src) == 1;
		else if (!strcmp(argv[i], "--dst") && i + 1 < argc)
			have_dst = inet_pton(AF_INET6, argv[++i], &dst) == 1;
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc)
			timeout_ms = atol(argv[++i]);
		else if (!strcmp(argv[i], "--hbh"))
			hbh = 1;
		else
			usage();
	}
	if (!have_src || !have_dst || port < 1 || port > 65535 || timeout_ms < 1)
		usage();

	/* The receiving socket first, so no answer can arrive before it exists. */
	int rx = socket(AF_INET6, SOCK_RAW, IPPROTO_TCP);
	if (rx < 0)
		die("socket(IPPROTO_TCP)");
	int tx = socket(AF_INET6, SOCK_RAW, IPPROTO_RAW);
	if (tx < 0)
		die("socket(IPPROTO_RAW)");
	int one = 1;
	if (setsockopt(tx, IPPROTO_IPV6, IPV6_HDRINCL, &one, sizeof(one)))
		die("IPV6_HDRINCL");

	uint8_t pkt[40 + 8 + 20];
	size_t ext = hbh ? 8 : 0, len = 40 + ext + 20;
	uint16_t sport;
	uint32_t seq;

	srand((unsigned)(getpid() ^ now_ms()));
	sport = (uint16_t)(40000 + rand() % 20000);
	seq = (uint32_t)rand();
	memset(pkt, 0, sizeof(pkt));
	/* IPv6 header: version 6, payload length, next header, hop limit 64. */
	pkt[0] = 0x60;
	pkt[4] = (uint8_t)((ext + 20) >> 8);
	pkt[5] = (uint8_t)(ext + 20);
	pkt[6] = hbh ? 0 /* hop-by-hop */ : IPPROTO_TCP;
	pkt[7] = 64;
	memcpy(pkt + 8, &src, 16);
	memcpy(pkt + 24, &dst, 16);
	if (hbh) {
		uint8_t *h = pkt + 40;

		h[0] = IPPROTO_TCP; /* next header */
		h[1] = 0;           /* (0 + 1) * 8 bytes */
		h[2] = 1;           /* PadN option ... */
		h[3] = 4;           /* ... with 4 bytes of padding */
	}
	uint8_t *t = pkt + 40 + ext;
	t[0] = sport >> 8;
	t[1] = sport & 0xff;
	t[2] = (uint8_t)(port >> 8);
	t[3] = (uint8_t)port;
	t[4] = seq >> 24;
	t[5] = seq >> 16;
	t[6] = seq >> 8;
	t[7] = seq;
	t[12] = 5 << 4; /* data offset: 5 words */
	t[13] = 0x02;   /* SYN */
	t[14] = 0xff;   /* window */
	t[15] = 0xff;
	/* Checksum over the IPv6 pseudo-header (upper-layer length and protocol, not the options). */
	uint8_t pseudo[40];
	memcpy(pseudo, &src, 16);
	memcpy(pseudo + 16, &dst, 16);
	memset(pseudo + 32, 0, 8);
	pseudo[35] = 20;
	pseudo[39] = IPPROTO_TCP;
	uint16_t c = csum_fold(csum_add(csum_add(0, pseudo, sizeof(pseudo)), t, 20));
	t[16] = c >> 8;
	t[17] = c & 0xff;

	struct sockaddr_in6 to = { .sin6_family = AF_INET6, .sin6_addr = dst };
	if (sendto(tx, pkt, len, 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)len)
		die("sendto");

	long deadline = now_ms() + timeout_ms;
	for (;;) {
		long left = deadline - now_ms();
		if (left <= 0)
			break;
		struct pollfd pfd = { .fd = rx, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		uint8_t buf[2048];
		struct sockaddr_in6 from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(rx, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		/* IPv6 raw sockets deliver the transport header without the IPv6 header. */
		if (n < 20 || memcmp(&from.sin6_addr, &dst, 16))
			continue;
		if ((buf[0] << 8 | buf[1]) != port || (buf[2] << 8 | buf[3]) != sport)
			continue;
		if ((buf[13] & 0x12) == 0x12) {
			printf("{\"result\":\"synack\",\"sport\":%u}\n", sport);
			return 0;
		}
		if (buf[13] & 0x04) {
			printf("{\"result\":\"rst\",\"sport\":%u}\n", sport);
			return 0;
		}
	}
	printf("{\"result\":\"timeout\",\"sport\":%u}\n", sport);
	return 0;
}
