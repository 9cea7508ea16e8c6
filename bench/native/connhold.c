/*
 * connhold: many concurrent TCP connections, held open (bench/concurrency.ts). One process holds
 * at most what its descriptor limit allows (this machine's hard limit is 20000 and root cannot
 * raise it: no CAP_SYS_RESOURCE), so the scenario runs one holder and one server per VIP port.
 *
 *   connhold serve PORT
 *       epoll echo server; prints {"event":"listening"} once bound, then echoes every byte it
 *       gets on every connection, forever.
 *
 *   connhold hold VIP PORT
 *       Reads commands on stdin, one per line, and answers each with one JSON line:
 *         fill N INFLIGHT  open connections (INFLIGHT connects at a time) until N are held:
 *                          {"held":H,"errors":E,"first_error":"..."}
 *         sample K         K more, one at a time; each one's connect + first round trip:
 *                          {"sample":K,"lat_us":[...],"bad_peer":B,"errors":E}
 *         check            getpeername() of every held connection again:
 *                          {"held":H,"bad_peer_at_end":B,"rss_kib":R}
 *       Each new connection: a non-blocking connect(), getpeername() once connected (must be
 *       VIP:PORT, the address the program asked for, whatever the datapath did underneath), one
 *       byte written and its echo read; then it is held (no more events wanted). Every
 *       connection made stays open until the process exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 64
#define MAX_CHECKPOINTS 16

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void raise_nofile(void)
{
	struct rlimit r;
	long max = 1048576;
	FILE *f = fopen("/proc/sys/fs/nr_open", "r");
	if (f) {
		if (fscanf(f, "%ld", &max) != 1)
			max = 1048576;
		fclose(f);
	}
	r.rlim_cur = r.rlim_max = (rlim_t)max;
	if (setrlimit(RLIMIT_NOFILE, &r) < 0) {
		getrlimit(RLIMIT_NOFILE, &r);
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static int parse_ports(const char *s, int *ports)
{
	int n = 0;
	char *copy = strdup(s), *save = NULL, *tok;
	for (tok = strtok_r(copy, ",", &save); tok && n < MAX_PORTS; tok = strtok_r(NULL, ",", &save)) {
		int p = atoi(tok);
		if (p <= 0 || p > 65535) {
			fprintf(stderr, "connhold: bad port %s\n", tok);
			exit(2);
		}
		ports[n++] = p;
	}
	free(copy);
	return n;
}

static long rss_kib(void)
{
	long kib = 0;
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* ---------------------------------------------------------------- serve */

static int serve(const char *portlist) /* one port, or several */
{
	int ports[MAX_PORTS], n = parse_ports(portlist, ports), ep = epoll_create1(EPOLL_CLOEXEC);
	int lfd[MAX_PORTS];
	struct epoll_event ev, evs[512];
	char buf[4096];

	raise_nofile();
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(ports[i]), .sin_addr.s_addr = htonl(INADDR_ANY)};
		int one = 1;
		lfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		setsockopt(lfd[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lfd[i], (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd[i], 65535) < 0) {
			fprintf(stderr, "connhold: port %d: %s\n", ports[i], strerror(errno));
			return 1;
		}
		ev.events = EPOLLIN;
		ev.data.u64 = (uint64_t)lfd[i] | (1ull << 32);
		epoll_ctl(ep, EPOLL_CTL_ADD, lfd[i], &ev);
	}
	printf("{\"event\":\"listening\",\"ports\":%d}\n", n);
	fflush(stdout);
	for (;;) {
		int k = epoll_wait(ep, evs, 512, -1);
		for (int i = 0; i < k; i++) {
			int fd = (int)(evs[i].data.u64 & 0xffffffff);
			if (evs[i].data.u64 >> 32) {
				for (;;) {
					int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					if (c < 0)
						break;
					ev.events = EPOLLIN;
					ev.data.u64 = (uint64_t)c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r > 0) {
				if (write(fd, buf, (size_t)r) < 0) {
				}
			} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
				close(fd);
			}
		}
	}
}

/* ---------------------------------------------------------------- hold */

enum { ST_CONNECTING = 1, ST_WAIT_ECHO = 2, ST_HELD = 3 };

struct conn {
	uint64_t start;
	uint16_t port;
	uint8_t state;
};

static struct conn *conns; /* indexed by fd */
static long nconns_cap;
static struct in_addr vip;
static long open_ok, bad_peer, errors_n;
static char first_error[160];

static void note_error(const char *what, int err)
{
	errors_n++;
	if (!first_error[0])
		snprintf(first_error, sizeof(first_error), "%s: %s", what, strerror(err));
}

static int peer_is_vip(int fd, uint16_t port)
{
	struct sockaddr_in p;
	socklen_t len = sizeof(p);
	if (getpeername(fd, (struct sockaddr *)&p, &len) < 0)
		return 0;
	return p.sin_family == AF_INET && p.sin_addr.s_addr == vip.s_addr && ntohs(p.sin_port) == port;
}

/* Starts one connect; the fd, or -1 (error noted; *fatal set when the kernel refuses more). */
static int start_connect(int ep, uint16_t port, int *fatal)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = vip};
	struct epoll_event ev;
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		note_error("socket", errno);
		*fatal = 1;
		return -1;
	}
	if (fd >= nconns_cap) {
		note_error("fd table", EMFILE);
		close(fd);
		*fatal = 1;
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	conns[fd].start = now_ns();
	conns[fd].port = port;
	conns[fd].state = ST_CONNECTING;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		int e = errno;
		note_error("connect", e);
		close(fd);
		conns[fd].state = 0;
		if (e == EADDRNOTAVAIL || e == ENOMEM || e == ENOBUFS)
			*fatal = 1;
		return -1;
	}
	ev.events = EPOLLOUT | EPOLLIN;
	ev.data.fd = fd;
	epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
	return fd;
}

/* Handles an event; returns the latency in ns when the connection completed its round trip, 0 if
 * still going, -1 on failure. */
static int64_t on_event(int ep, int fd, uint32_t events)
{
	struct conn *c = &conns[fd];
	char b = 'x';
	if (c->state == ST_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			note_error("connect", err);
			goto fail;
		}
		if (!peer_is_vip(fd, c->port))
			bad_peer++;
		if (write(fd, &b, 1) != 1) {
			note_error("write", errno);
			goto fail;
		}
		c->state = ST_WAIT_ECHO;
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
		epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
		return 0;
	}
	if (c->state == ST_WAIT_ECHO && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) {
		ssize_t r = read(fd, &b, 1);
		if (r != 1) {
			if (r < 0 && errno == EAGAIN)
				return 0;
			note_error("echo", r == 0 ? ECONNRESET : errno);
			goto fail;
		}
		c->state = ST_HELD;
		/* Held: no more events wanted (an idle connection costs the kernel nothing here). */
		epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
		open_ok++;
		return (int64_t)(now_ns() - c->start);
	}
	return 0;
fail:
	epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
	c->state = 0;
	return -1;
}

static void drain_inflight(int ep, long *inflight)
{
	struct epoll_event evs[1024];
	while (*inflight > 0) {
		int k = epoll_wait(ep, evs, 1024, 5000);
		if (k <= 0) {
			note_error("drain", ETIMEDOUT);
			break;
		}
		for (int i = 0; i < k; i++)
			if (on_event(ep, evs[i].data.fd, evs[i].events) != 0)
				(*inflight)--;
	}
}

static int hold(int argc, char **argv)
{
	int ep, fatal = 0;
	uint16_t port;
	long inflight = 0;
	struct epoll_event evs[1024];
	struct rlimit r;
	char line[128];

	if (argc < 4 || inet_pton(AF_INET, argv[2], &vip) != 1 || atoi(argv[3]) <= 0 || atoi(argv[3]) > 65535) {
		fprintf(stderr, "usage: connhold hold VIP PORT\n");
		return 2;
	}
	port = (uint16_t)atoi(argv[3]);
	raise_nofile();
	getrlimit(RLIMIT_NOFILE, &r);
	nconns_cap = (long)r.rlim_cur;
	conns = calloc((size_t)nconns_cap, sizeof(*conns));
	ep = epoll_create1(EPOLL_CLOEXEC);

	while (fgets(line, sizeof(line), stdin)) {
		long n = 0, k = 0;
		int infl = 256;
		if (sscanf(line, "fill %ld %d", &n, &infl) >= 1) {
			while (!fatal && open_ok < n) {
				while (!fatal && inflight < infl && open_ok + inflight < n) {
					if (start_connect(ep, port, &fatal) >= 0)
						inflight++;
					else if (errors_n > 1000)
						fatal = 1;
				}
				int got = epoll_wait(ep, evs, 1024, 5000);
				if (got == 0) {
					note_error("fill", ETIMEDOUT);
					fatal = 1;
				}
				for (int i = 0; i < got; i++)
					if (on_event(ep, evs[i].data.fd, evs[i].events) != 0)
						inflight--;
			}
			drain_inflight(ep, &inflight);
			printf("{\"held\":%ld,\"errors\":%ld,\"first_error\":\"%s\"}\n", open_ok, errors_n, first_error);
		} else if (sscanf(line, "sample %ld", &k) == 1) {
			long got = 0, bad_before = bad_peer;
			int64_t *lat = calloc((size_t)(k > 0 ? k : 1), sizeof(int64_t));
			for (long s = 0; s < k && !fatal; s++) {
				int fd = start_connect(ep, port, &fatal);
				if (fd < 0)
					continue;
				for (;;) {
					int e = epoll_wait(ep, evs, 1, 5000);
					if (e <= 0) {
						note_error("sample", ETIMEDOUT);
						fatal = 1;
						break;
					}
					int64_t d = on_event(ep, evs[0].data.fd, evs[0].events);
					if (d > 0)
						lat[got++] = d;
					if (d != 0)
						break;
				}
			}
			printf("{\"sample\":%ld,\"bad_peer\":%ld,\"errors\":%ld,\"first_error\":\"%s\",\"lat_us\":[", got, bad_peer - bad_before, errors_n, first_error);
			for (long i = 0; i < got; i++)
				printf("%s%.1f", i ? "," : "", (double)lat[i] / 1000.0);
			printf("]}\n");
			free(lat);
		} else if (!strncmp(line, "check", 5)) {
			long held = 0, bad_end = 0;
			for (long fd = 0; fd < nconns_cap; fd++) {
				if (conns[fd].state != ST_HELD)
					continue;
				held++;
				if (!peer_is_vip((int)fd, conns[fd].port))
					bad_end++;
			}
			printf("{\"held\":%ld,\"bad_peer_at_end\":%ld,\"bad_peer\":%ld,\"errors\":%ld,\"rss_kib\":%ld}\n", held, bad_end, bad_peer, errors_n, rss_kib());
		} else {
			printf("{\"error\":\"unknown command\"}\n");
		}
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "serve"))
		return serve(argv[2]);
	if (argc >= 2 && !strcmp(argv[1], "hold"))
		return hold(argc, argv);
	fprintf(stderr, "usage: connhold serve PORT | connhold hold VIP PORT (commands on stdin)\n");
	return 2;
}
