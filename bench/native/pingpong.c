// Minimal native ping-pong for the sockmesh benchmarks: Node's own ~25 µs per round trip hides
// the datapath's effect, so the latency/CPU comparisons use this instead.
//
//   server: pingpong --serve --port P [--host ADDR]
//           one thread, epoll, echoes whatever each connection sends (so S bytes in -> S bytes
//           out per round), TCP_NODELAY on every accepted socket, any number of connections.
//           Prints {"event":"listening",...,"pid":N} once listening (same shape as podtool's).
//   client: pingpong --target HOST:PORT --size S --rounds R [--warmup W]
//           one connection, TCP_NODELAY; per round: write S bytes, read until S bytes came back,
//           timed with clock_gettime(CLOCK_MONOTONIC). Prints one JSON line: p50/p90/p99 (µs),
//           rounds, and the client's own CPU time over the measured rounds (getrusage
//           RUSAGE_SELF, user+sys, µs). HOST may be IPv4, or IPv6 in brackets.
//
// Build: gcc -O2 -Wall -o build/bench/pingpong bench/native/pingpong.c (done by the bench).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  printf("{\"ok\":false,\"err\":\"%s\",\"errno\":%d,\"message\":\"%s\"}\n", what, errno, strerror(errno));
  fflush(stdout);
  exit(1);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t cpu_us(int64_t *user, int64_t *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
  *sys = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
  return *user + *sys;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

// Same rank rule as podtool: the ceil(p/100*n)-th smallest sample.
static double pct(const int64_t *sorted, long n, double p) {
  long i = (long)((p / 100.0) * n + 0.999999999) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return sorted[i] / 1000.0;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void __attribute__((noreturn)) serve(const char *host, int port) {
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof ss);
  int one = 1, zero = 0;
  if (lfd >= 0 && (!host || strchr(host, ':'))) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (host && inet_pton(AF_INET6, host, &a->sin6_addr) != 1) die("bad-host");
    if (!host) a->sin6_addr = in6addr_any;
    setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sl = sizeof *a;
  } else {
    if (lfd >= 0) close(lfd);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1) die("bad-host");
    sl = sizeof *a;
  }
  if (lfd < 0) die("socket");
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&ss, sl) < 0) die("bind");
  if (listen(lfd, 1024) < 0) die("listen");
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  printf("{\"event\":\"listening\",\"proto\":\"tcp\",\"impl\":\"native\",\"host\":\"%s\",\"port\":%d,\"pid\":%d}\n",
         host ? host : "::", port, (int)getpid());
  fflush(stdout);

  static char buf[1 << 18];
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (c < 0) break;
          nodelay(c);
          struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
        continue;
      }
      // Echo everything readable. Writes are done blocking-style (spin on EAGAIN with a poll on
      // this fd only): a ping-pong peer never has more than one message in flight, so the
      // socket buffer absorbs it and this almost never waits.
      for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
          epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
          close(fd);
          break;
        }
        if (r < 0) break; // EAGAIN: drained
        ssize_t off = 0;
        while (off < r) {
          ssize_t w = write(fd, buf + off, r - off);
          if (w > 0) {
            off += w;
          } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
          } else {
            break;
          }
        }
        if (off < r) {
          epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
          close(fd);
          break;
        }
      }
    }
  }
}

static int client(const char *target, long size, long rounds, long warmup) {
  char host[256];
  const char *colon = strrchr(target, ':');
  if (!colon || colon == target || (size_t)(colon - target) >= sizeof host) {
    errno = EINVAL;
    die("bad-target");
  }
  memcpy(host, target, colon - target);
  host[colon - target] = 0;
  char *h = host;
  if (h[0] == '[') {
    h++;
    char *e = strchr(h, ']');
    if (e) *e = 0;
  }
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *ai;
  if (getaddrinfo(h, colon + 1, &hints, &ai) != 0) {
    errno = EINVAL;
    die("bad-target");
  }
  int fd = socket(ai->ai_family, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  nodelay(fd);
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect");
  freeaddrinfo(ai);

  char *msg = malloc(size), *in = malloc(size);
  int64_t *samples = malloc(sizeof(int64_t) * rounds);
  if (!msg || !in || !samples) die("malloc");
  memset(msg, 'a', size);
  int64_t u0 = 0, s0 = 0, u1 = 0, s1 = 0, w0 = 0;
  for (long i = 0; i < warmup + rounds; i++) {
    if (i == warmup) {
      cpu_us(&u0, &s0);
      w0 = now_ns();
    }
    int64_t t0 = now_ns();
    for (long off = 0; off < size;) {
      ssize_t w = write(fd, msg + off, size - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        die("write");
      }
      off += w;
    }
    for (long got = 0; got < size;) {
      ssize_t r = read(fd, in + got, size - got);
      if (r == 0) {
        errno = ECONNRESET;
        die("closed");
      }
      if (r < 0) {
        if (errno == EINTR) continue;
        die("read");
      }
      got += r;
    }
    if (i >= warmup) samples[i - warmup] = now_ns() - t0;
  }
  int64_t wall = now_ns() - w0;
  cpu_us(&u1, &s1);
  close(fd);
  double sum = 0;
  for (long i = 0; i < rounds; i++) sum += samples[i];
  qsort(samples, rounds, sizeof *samples, cmp_i64);
  printf("{\"ok\":true,\"impl\":\"native\",\"size\":%ld,\"rounds\":%ld,\"warmup\":%ld,\"conns\":1,\"samples\":%ld,"
         "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,\"min_us\":%.3f,\"max_us\":%.3f,"
         "\"wall_us\":%lld,\"rps\":%.0f,\"cpu_user_us\":%lld,\"cpu_sys_us\":%lld,\"cpu_us\":%lld}\n",
         size, rounds, warmup, rounds, pct(samples, rounds, 50), pct(samples, rounds, 90), pct(samples, rounds, 99),
         sum / rounds / 1000.0, samples[0] / 1000.0, samples[rounds - 1] / 1000.0, (long long)(wall / 1000),
         rounds / (wall / 1e9), (long long)(u1 - u0), (long long)(s1 - s0), (long long)((u1 - u0) + (s1 - s0)));
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  const char *target = NULL, *host = NULL;
  long size = 64, rounds = 1000, warmup = -1;
  int port = -1, do_serve = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--serve")) do_serve = 1;
    else if (!strcmp(a, "--port") && v) port = atoi(argv[++i]);
    else if (!strcmp(a, "--host") && v) host = argv[++i];
    else if (!strcmp(a, "--target") && v) target = argv[++i];
    else if (!strcmp(a, "--size") && v) size = atol(argv[++i]);
    else if (!strcmp(a, "--rounds") && v) rounds = atol(argv[++i]);
    else if (!strcmp(a, "--warmup") && v) warmup = atol(argv[++i]);
    else {
      fprintf(stderr,
              "usage: pingpong --serve --port P [--host ADDR]\n"
              "       pingpong --target HOST:PORT --size S --rounds R [--warmup W]\n");
      return 2;
    }
  }
  if (do_serve) {
    if (port < 0 || port > 65535) {
      fprintf(stderr, "pingpong: --serve needs --port\n");
      return 2;
    }
    serve(host, port);
  }
  if (!target || size < 1 || rounds < 1) {
    fprintf(stderr, "pingpong: client needs --target, --size >= 1, --rounds >= 1\n");
    return 2;
  }
  if (warmup < 0) warmup = rounds / 10 < 1000 ? rounds / 10 : 1000;
  return client(target, size, rounds, warmup);
}
