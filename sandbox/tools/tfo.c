// SPDX-License-Identifier: Apache-2.0
/*
 * tfo: TCP Fast Open both ways, for the tests (Node cannot send data in a SYN).
 *
 *   tfo serve --port N                      listen with TCP_FASTOPEN; per connection: read to EOF,
 *                                           write back what came, close. Runs until killed; prints
 *                                           {"listening":N} once ready.
 *   tfo client --target IP --port N --count C
 *                                           C connections, each: 64 bytes in the SYN (MSG_FASTOPEN),
 *                                           then 4 more writes, half-close, read the echo, compare.
 *                                           {"connections":C,"identical":K,"synDataAcked":S}
 * The first connection only fetches a cookie; the later ones carry data in their SYN.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif
#ifndef TCPI_OPT_SYN_DATA
#define TCPI_OPT_SYN_DATA 32
#endif

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
	for (int i = 2; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return def;
}

static int serve(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1, qlen = 64;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || setsockopt(s, IPPROTO_TCP, TCP_FASTOPEN, &qlen, sizeof(qlen)) || listen(s, 64)) {
		perror("tfo serve");
		return 1;
	}
	printf("{\"listening\":%d}\n", port);
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		char buf[65536];
		size_t n = 0;
		ssize_t r;

		if (c < 0)
			continue;
		while (n < sizeof(buf) && (r = read(c, buf + n, sizeof(buf) - n)) > 0)
			n += (size_t)r;
		for (size_t off = 0; off < n;) {
			ssize_t w = write(c, buf + off, n - off);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		close(c);
	}
}

static int client(const char *ip, int port, int count)
{
	int identical = 0, acked = 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
		fprintf(stderr, "tfo: bad --target\n");
		return 2;
	}
	for (int i = 0; i < count; i++) {
		char sent[64 * 5], got[sizeof(sent) + 1];
		size_t n = 0;
		ssize_t r;
		int s = socket(AF_INET, SOCK_STREAM, 0);

		for (size_t j = 0; j < sizeof(sent); j++)
			sent[j] = (char)('A' + (j / 64)) ; /* 64 x 'A' in the SYN, then 'B'..'E' */
		if (sendto(s, sent, 64, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof(a)) != 64) {
			perror("tfo sendto");
			close(s);
			continue;
		}
		for (int k = 1; k < 5; k++)
			if (write(s, sent + 64 * k, 64) != 64)
				perror("tfo write");
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		if (!getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &tl) && (ti.tcpi_options & TCPI_OPT_SYN_DATA))
			acked++;
		shutdown(s, SHUT_WR);
		while (n < sizeof(got) && (r = read(s, got + n, sizeof(got) - n)) > 0)
			n += (size_t)r;
		if (n == sizeof(sent) && !memcmp(sent, got, n))
			identical++;
		else
			fprintf(stderr, "tfo: connection %d: %zu bytes back, first differing at %zu\n", i, n,
				(size_t)({ size_t d = 0; while (d < n && d < sizeof(sent) && sent[d] == got[d]) d++; d; }));
		close(s);
	}
	printf("{\"connections\":%d,\"identical\":%d,\"synDataAcked\":%d}\n", count, identical, acked);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return serve(atoi(arg(argc, argv, "--port", "0")));
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return client(arg(argc, argv, "--target", ""), atoi(arg(argc, argv, "--port", "0")), atoi(arg(argc, argv, "--count", "1")));
	fprintf(stderr, "usage: tfo serve --port N | tfo client --target IP --port N --count C\n");
	return 2;
}
