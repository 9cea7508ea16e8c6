// Native traffic tool for the sockmesh benchmarks: Node's own ~25 µs per round trip hides the
// datapath's effect, so the latency/CPU/throughput comparisons use this instead. One thread, no
// dependencies beyond libc/libm.
//
// SERVER  pingpong --serve --port P [--host ADDR] [--mode echo|sink|http]
//   One thread, epoll (level-triggered), nonblocking sockets, TCP_NODELAY on every accepted socket,
//   any number of connections. Prints {"event":"listening",...,"pid":N} once listening (same shape
//   as podtool's; with --port 0 it carries the port the kernel chose), then serves until killed.
//   Without --host it listens on [::] (dual stack).
//   On SIGUSR1 it prints one line {"event":"stats","accepted","open","requests","transfers",
//   "bytes_in"} (tests use it to count connections and bytes; nothing is printed otherwise).
//   --mode echo (default)  echoes whatever arrives. Output that the socket does not take at once is
//                          buffered and the connection stops reading until it has drained.
//   --mode sink            per transfer: an 8-byte big-endian length N, then N bytes that are
//                          discarded, then the server answers 1 byte ('k'). Transfers may follow
//                          each other on one connection.
//   --mode http            HTTP/1.1 with keep-alive and pipelining; requests may arrive split across
//                          reads or several per read; responses go out in order. Any method and
//                          path. The request body (Content-Length framing only) is echoed as the
//                          response body; a request without body gets `ok\n`. Always `200 OK` with
//                          Content-Length (HEAD: the headers only). `Expect: 100-continue` gets a
//                          `100 Continue`. `Connection: close` (or HTTP/1.0 without keep-alive):
//                          answer, then shut the write side down and discard input until the peer
//                          closes (2 s at most) so the response is not lost to a RST.
//                          Rejected, each with an empty response + `Connection: close`, then the
//                          same shutdown: any Transfer-Encoding on a request (chunked bodies are
//                          not supported) -> 411; head larger than 16 KiB -> 431; body over 64 MiB
//                          -> 413; malformed request line/headers, obs-fold, bad or conflicting
//                          Content-Length -> 400; a version other than HTTP/1.0 and 1.1 -> 505.
//
// CLIENT, ping-pong  pingpong --target HOST:PORT --size S --rounds R [--warmup W] [--conns N]
//                             [--http [--path /p] [--host-header H]] [--timeout-ms T]
//   N connections (default 1), each does W warm-up rounds (default R/10, at most 1000), then - when
//   every connection has finished its warm-up - R measured rounds; one message in flight per
//   connection. One round = write the request, read until the whole response is in; latency from
//   clock_gettime(CLOCK_MONOTONIC) around it. N = 1: send(MSG_DONTWAIT), then a blocking read (no
//   epoll in the timed path; only a request larger than the socket buffer falls back to poll() so
//   its echo is read while it is still being sent); N > 1: nonblocking sockets, one epoll loop.
//   Plain (default): the request is S bytes (S >= 1), the response is the S bytes echoed back.
//   --http: `POST PATH HTTP/1.1` with Host H (default `bench`) and a Content-Length: S body, or
//   `GET` when S = 0. The response must be 2xx (1xx interim responses are skipped); its body may be
//   framed by Content-Length, `Transfer-Encoding: chunked` (with extensions and trailers) or the
//   end of the connection; header names are matched case-insensitively and unknown headers ignored.
//   A response with `Connection: close` (or a body ending at EOF) makes the client reconnect
//   before its next round (counted in "reconnects"). Body bytes received -> "resp_body_bytes".
//   Prints one JSON line: {"ok":true,"mode":"echo"|"http","rounds":N*R (all measured samples),
//   "rounds_per_conn":R,"conns":N,"p50_us","p90_us","p99_us","mean_us","min_us","max_us",
//   "elapsed_us" (wall time of the measured phase; "wall_us" is the same), "tps" (= "rps",
//   rounds / elapsed),"cpu_user_us","cpu_sys_us","cpu_us" (this process over the measured phase,
//   getrusage RUSAGE_SELF),"hist":{...}}.
//
// CLIENT, connect latency  pingpong --target HOST:PORT --connect N [--warmup W] [--timeout-ms T]
//   (server in echo mode) N times: socket(), TCP_NODELAY, then timed: blocking connect() + one
//   1-byte echo round; then SO_LINGER {1,0} + close(), i.e. a RST, so neither side keeps a
//   TIME_WAIT socket. W defaults to N/10 (at most 100). Same JSON as ping-pong with
//   "mode":"connect","rounds":N,"conns":N, plus "connect_p50_us","connect_p90_us","connect_p99_us",
//   "connect_hist" for connect() alone. A refused connect, a timeout (T ms, default 10000, for the
//   connect and the echo alike) or any other error ->
//   {"ok":false,"err":"connect"|"connect-timeout"|"timeout"|...,"errno","message","completed":K}.
//
// CLIENT, bulk  pingpong --target HOST:PORT --bulk BYTES --size WRITE_SIZE [--reps K] [--warmup W]
//   (server in sink mode) one connection, TCP_NODELAY; W (default 0) unmeasured, then K (default 1)
//   measured transfers. Transfer = 8-byte length, BYTES bytes in write()s of WRITE_SIZE, then wait
//   for the 1-byte ack; timed from the first write to the ack. Prints
//   {"ok":true,"mode":"bulk","bytes" (= K*BYTES, measured only),"bytes_per_rep","reps","write_size",
//   "elapsed_us" (sum over measured transfers),"gbit_s" (bytes*8 / elapsed: the aggregate),
//   "median_gbit_s","min_gbit_s","max_gbit_s" (per transfer),"cpu_user_us","cpu_sys_us","cpu_us"}.
//
// HOST may be IPv4, or IPv6 in brackets. Any client error prints {"ok":false,"err",...} and exits 1.
//
// HISTOGRAM ("hist", "connect_hist"): log-linear, HdrHistogram-like, no cap on the sample count.
//   Values in ns. v < 2048: one bucket per value (exact). For k >= 11, [2^k, 2^(k+1)) is split into
//   1024 buckets of width 2^(k-10), so a bucket's width is < 1/1024 of its lower bound.
//   Output: {"unit":"ns","count","min","max" (exact, ns),"buckets":[[lowerBoundNs,count],...]}, only
//   non-empty buckets, ascending. Percentile p: rank = max(1, ceil(p/100 * count)) (the rank rule
//   podtool uses on sorted samples); the value is that of the bucket holding the rank-th smallest
//   sample: its lower bound for exact buckets, else lower + width/2 (the midpoint of
//   [lower, lower+width), an integer) - within 1/2048 (< 0.05%) of every value in the bucket.
//   p50_us etc. = that value / 1000, printed with 3 decimals, i.e. exactly; bench/hdr.ts implements
//   the same buckets and rule, so Hdr.fromBuckets(hist.buckets).percentile(50)/1000 === p50_us.
//   mean_us, min_us, max_us are exact.
//
// Build: gcc -O2 -Wall -o build/bench/pingpong bench/native/pingpong.c -lm (done by the bench).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

// ---- small helpers ----------------------------------------------------------------------------

static long g_completed = -1; // connect mode: connects done before a failure (printed in errors)

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
    else putchar(*s);
  }
  putchar('"');
}

// Failure with errno: {"ok":false,"err":what,"errno":N,"message":strerror}.
static void __attribute__((noreturn)) die(const char *what) {
  int e = errno;
  printf("{\"ok\":false,\"err\":");
  json_str(what);
  printf(",\"errno\":%d,\"message\":", e);
  json_str(strerror(e));
  if (g_completed >= 0) printf(",\"completed\":%ld", g_completed);
  printf("}\n");
  fflush(stdout);
  exit(1);
}

// Failure without a meaningful errno (protocol errors).
static void __attribute__((noreturn, format(printf, 2, 3))) die_msg(const char *what, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("{\"ok\":false,\"err\":");
  json_str(what);
  printf(",\"errno\":0,\"message\":");
  json_str(msg);
  printf("}\n");
  fflush(stdout);
  exit(1);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) die("malloc");
  return q;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void cpu_us(int64_t *user, int64_t *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
  *sys = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void set_nonblock(int fd, int on) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

// Growable byte buffer: live bytes are [off, len).
struct buf {
  char *p;
  size_t off, len, cap;
};

static void buf_reserve(struct buf *b, size_t more) {
  if (b->off == b->len) b->off = b->len = 0;
  if (b->cap - b->len >= more) return;
  if (b->off > 0) { // compact first
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->cap - b->len >= more) return;
  }
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < more) cap *= 2;
  b->p = xrealloc(b->p, cap);
  b->cap = cap;
}

static void buf_put(struct buf *b, const void *d, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(struct buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void buf_free(struct buf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

static size_t buf_avail(const struct buf *b) { return b->len - b->off; }

// ---- histogram (mirrored by bench/hdr.ts: keep the two in step) -------------------------------

#define HDR_EXACT 2048 // values below are their own bucket
#define HDR_SUB 1024   // buckets per power of two above
#define HDR_NBUCKETS (HDR_EXACT + (63 - 11) * HDR_SUB)

struct hist {
  uint64_t *counts; // HDR_NBUCKETS
  uint64_t n;
  int64_t min, max;
  double sum;
};

static void hist_init(struct hist *h) {
  memset(h, 0, sizeof *h);
  h->counts = calloc(HDR_NBUCKETS, sizeof *h->counts);
  if (!h->counts) die("malloc");
}

static int hdr_index(int64_t v) {
  if (v < HDR_EXACT) return v < 0 ? 0 : (int)v;
  int k = 63 - __builtin_clzll((uint64_t)v); // 2^k <= v < 2^(k+1), k >= 11
  return HDR_EXACT + (k - 11) * HDR_SUB + (int)((v >> (k - 10)) - HDR_SUB);
}

static int64_t hdr_lower(int i) {
  if (i < HDR_EXACT) return i;
  int k = 11 + (i - HDR_EXACT) / HDR_SUB;
  return (int64_t)(HDR_SUB + (i - HDR_EXACT) % HDR_SUB) << (k - 10);
}

// The value reported for bucket i: exact below 2048, else the midpoint lower + width/2.
static int64_t hdr_value(int i) {
  if (i < HDR_EXACT) return i;
  int k = 11 + (i - HDR_EXACT) / HDR_SUB;
  return hdr_lower(i) + ((int64_t)1 << (k - 10)) / 2;
}

static void hist_record(struct hist *h, int64_t v) {
  if (v < 0) v = 0;
  h->counts[hdr_index(v)]++;
  if (!h->n || v < h->min) h->min = v;
  if (!h->n || v > h->max) h->max = v;
  h->n++;
  h->sum += (double)v;
}

static int64_t hist_pct(const struct hist *h, double p) {
  if (!h->n) return 0;
  double r = ceil(p / 100.0 * (double)h->n);
  uint64_t rank = r < 1 ? 1 : r > (double)h->n ? h->n : (uint64_t)r;
  uint64_t cum = 0;
  for (int i = 0; i < HDR_NBUCKETS; i++) {
    cum += h->counts[i];
    if (cum >= rank) return hdr_value(i);
  }
  return hdr_value(HDR_NBUCKETS - 1);
}

static void hist_print(const struct hist *h) {
  printf("{\"unit\":\"ns\",\"count\":%llu,\"min\":%lld,\"max\":%lld,\"buckets\":[", (unsigned long long)h->n,
         (long long)h->min, (long long)h->max);
  int first = 1;
  for (int i = 0; i < HDR_NBUCKETS; i++) {
    if (!h->counts[i]) continue;
    printf("%s[%lld,%llu]", first ? "" : ",", (long long)hdr_lower(i), (unsigned long long)h->counts[i]);
    first = 0;
  }
  printf("]}");
}

// "p50_us":..,"p90_us":..,"p99_us":..,"mean_us":..,"min_us":..,"max_us":..
static void hist_print_summary(const struct hist *h, const char *prefix) {
  printf("\"%sp50_us\":%.3f,\"%sp90_us\":%.3f,\"%sp99_us\":%.3f,\"%smean_us\":%.3f,\"%smin_us\":%.3f,\"%smax_us\":%.3f",
         prefix, hist_pct(h, 50) / 1000.0, prefix, hist_pct(h, 90) / 1000.0, prefix, hist_pct(h, 99) / 1000.0, prefix,
         h->n ? h->sum / (double)h->n / 1000.0 : 0.0, prefix, h->min / 1000.0, prefix, h->max / 1000.0);
}

// ---- HTTP head parsing (shared by server and client) -------------------------------------------

// Looks for the end of a head (an empty line; CRLF or bare LF) in p[0..n). *scan is where the
// previous call stopped, so bytes trickling in are not rescanned. Returns the head length
// (including the empty line) or 0 when incomplete.
static size_t head_end(const char *p, size_t n, size_t *scan) {
  for (size_t j = *scan; j < n; j++) {
    if (p[j] != '\n') continue;
    size_t s = j + 1;
    if (s >= n || (p[s] == '\r' && s + 1 >= n)) {
      *scan = j; // cannot decide yet
      return 0;
    }
    if (p[s] == '\n') return s + 1;
    if (p[s] == '\r' && p[s + 1] == '\n') return s + 2;
  }
  *scan = n;
  return 0;
}

// Next line of the head [*pos, end): sets *ls/*ll to the line without its CR/LF.
static int next_line(const char *p, size_t end, size_t *pos, const char **ls, size_t *ll) {
  if (*pos >= end) return 0;
  const char *nl = memchr(p + *pos, '\n', end - *pos);
  size_t e = nl ? (size_t)(nl - p) : end;
  *ls = p + *pos;
  *ll = e - *pos;
  if (*ll && (*ls)[*ll - 1] == '\r') (*ll)--;
  *pos = e + 1;
  return 1;
}

static int is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

// Splits "Name: value" (value without surrounding whitespace). 0 if malformed.
static int split_header(const char *l, size_t n, const char **name, size_t *nl, const char **val, size_t *vl) {
  const char *c = memchr(l, ':', n);
  if (!c || c == l) return 0;
  for (const char *q = l; q < c; q++)
    if (!is_tchar(*q)) return 0; // includes "Name : v" (request smuggling hygiene)
  *name = l;
  *nl = c - l;
  const char *v = c + 1, *e = l + n;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) e--;
  *val = v;
  *vl = e - v;
  return 1;
}

static int name_is(const char *n, size_t nl, const char *want) { return nl == strlen(want) && !strncasecmp(n, want, nl); }

// Does the comma-separated list v contain token tok (case-insensitive)?
static int has_token(const char *v, size_t vl, const char *tok) {
  size_t tl = strlen(tok);
  size_t i = 0;
  while (i < vl) {
    while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t s = i;
    while (i < vl && v[i] != ',') i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - s == tl && !strncasecmp(v + s, tok, tl)) return 1;
  }
  return 0;
}

// Decimal Content-Length; -1 if not a plain non-negative number (or absurdly large).
static int64_t parse_cl(const char *v, size_t vl) {
  if (!vl || vl > 18) return -1;
  int64_t x = 0;
  for (size_t i = 0; i < vl; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

// ---- server -----------------------------------------------------------------------------------

enum { M_ECHO, M_SINK, M_HTTP };
#define HTTP_MAX_HEAD (16 * 1024)
#define HTTP_MAX_BODY (64ULL * 1024 * 1024)
#define OUT_HIGH (4 * 1024 * 1024) // stop handling pipelined requests while this much is unsent
#define DRAIN_NS 2000000000LL

struct sconn {
  int fd;
  uint32_t events; // as registered with epoll
  int failed;      // a direct write failed: close at the next flush
  int closing;     // shut down the write side once `out` has drained
  int draining;    // write side shut: discard input until EOF or DRAIN_NS
  int64_t drain_since;
  struct buf in, out;
  // http: the current request's head, once parsed (head_len > 0)
  size_t scan, head_len;
  uint64_t body_len;
  int req_close, req_head, req_keepalive10, cont_sent, expect;
  // sink
  unsigned char lenb[8];
  int lenb_n;
  uint64_t sink_left;
};

static int g_mode = M_ECHO;
static int g_ep;
static struct sconn **g_conns; // indexed by fd
static int g_nconns;
static int g_draining;
static volatile sig_atomic_t g_stats_wanted;
static unsigned long long g_accepted, g_open, g_requests, g_transfers, g_bytes_in;
static char g_scratch[1 << 18];

static void on_usr1(int sig) {
  (void)sig;
  g_stats_wanted = 1;
}

static void set_events(struct sconn *c, uint32_t ev) {
  if (c->events == ev) return;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &e);
  c->events = ev;
}

static void sconn_close(struct sconn *c) {
  epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (c->draining) g_draining--;
  g_conns[c->fd] = NULL;
  buf_free(&c->in);
  buf_free(&c->out);
  free(c);
  g_open--;
}

// Writes what `out` holds. -1: connection failed; 0: bytes left (EPOLLOUT armed, reading paused);
// 1: all sent.
static int sconn_flush(struct sconn *c) {
  if (c->failed) return -1;
  while (buf_avail(&c->out)) {
    ssize_t w = write(c->fd, c->out.p + c->out.off, buf_avail(&c->out));
    if (w > 0) {
      c->out.off += w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && errno == EAGAIN) {
      set_events(c, EPOLLOUT);
      return 0;
    } else {
      return -1;
    }
  }
  c->out.off = c->out.len = 0;
  if (c->out.cap > (1 << 20)) buf_free(&c->out); // do not keep a 1 MiB echo buffer per idle conn
  if (c->closing && !c->draining) {
    shutdown(c->fd, SHUT_WR);
    c->draining = 1;
    c->drain_since = now_ns();
    g_draining++;
    buf_free(&c->in);
  }
  set_events(c, EPOLLIN | EPOLLRDHUP);
  return 1;
}

// Sends head+body straight from where they are when nothing is queued before them (no copy of
// large echoes into `out`); what the socket does not take is queued. Sets c->failed on error.
static void sconn_send2(struct sconn *c, const char *a, size_t al, const char *b, size_t bl) {
  if (!buf_avail(&c->out) && !c->failed) {
    struct iovec iov[2] = {{(void *)a, al}, {(void *)b, bl}};
    ssize_t w;
    do w = writev(c->fd, iov, 2);
    while (w < 0 && errno == EINTR);
    if (w < 0 && errno != EAGAIN) {
      c->failed = 1;
      return;
    }
    size_t n = w > 0 ? (size_t)w : 0;
    size_t da = n < al ? n : al;
    a += da, al -= da, n -= da;
    b += n, bl -= n;
  }
  if (al) buf_put(&c->out, a, al);
  if (bl) buf_put(&c->out, b, bl);
}

static void http_reject(struct sconn *c, int code, const char *reason) {
  buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, reason);
  c->closing = 1;
  c->in.off = c->in.len = 0;
}

// Parses the head in in[off, off+head_len). 0 ok, else an error response was queued.
static int http_parse_head(struct sconn *c) {
  const char *p = c->in.p + c->in.off;
  size_t pos = 0, ll;
  const char *l;
  next_line(p, c->head_len, &pos, &l, &ll);
  // METHOD SP target SP HTTP/1.x
  const char *sp1 = memchr(l, ' ', ll);
  const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', l + ll - sp1 - 1) : NULL;
  if (!sp1 || !sp2 || sp1 == l || sp2 == sp1 + 1) return http_reject(c, 400, "Bad Request"), -1;
  for (const char *q = l; q < sp1; q++)
    if (!is_tchar(*q)) return http_reject(c, 400, "Bad Request"), -1;
  size_t vl = l + ll - sp2 - 1;
  const char *ver = sp2 + 1;
  int v10;
  if (vl == 8 && !memcmp(ver, "HTTP/1.1", 8)) v10 = 0;
  else if (vl == 8 && !memcmp(ver, "HTTP/1.0", 8)) v10 = 1;
  else if (vl >= 5 && !memcmp(ver, "HTTP/", 5)) return http_reject(c, 505, "HTTP Version Not Supported"), -1;
  else return http_reject(c, 400, "Bad Request"), -1;
  c->req_head = (sp1 - l == 4 && !memcmp(l, "HEAD", 4));
  int64_t cl = -1;
  int conn_close = 0, conn_keep = 0, te = 0;
  c->expect = 0;
  while (next_line(p, c->head_len, &pos, &l, &ll) && ll) {
    const char *n, *v;
    size_t nl, vl2;
    if (l[0] == ' ' || l[0] == '\t' || !split_header(l, ll, &n, &nl, &v, &vl2))
      return http_reject(c, 400, "Bad Request"), -1; // obs-fold or garbage
    if (name_is(n, nl, "content-length")) {
      int64_t x = parse_cl(v, vl2);
      if (x < 0 || (cl >= 0 && x != cl)) return http_reject(c, 400, "Bad Request"), -1;
      cl = x;
    } else if (name_is(n, nl, "transfer-encoding")) {
      te = 1;
    } else if (name_is(n, nl, "connection")) {
      conn_close |= has_token(v, vl2, "close");
      conn_keep |= has_token(v, vl2, "keep-alive");
    } else if (name_is(n, nl, "expect")) {
      c->expect = has_token(v, vl2, "100-continue");
    }
  }
  if (te) return http_reject(c, 411, "Length Required"), -1;
  if (cl > 0 && (uint64_t)cl > HTTP_MAX_BODY) return http_reject(c, 413, "Content Too Large"), -1;
  c->body_len = cl > 0 ? (uint64_t)cl : 0;
  c->req_close = conn_close || (v10 && !conn_keep);
  c->req_keepalive10 = v10 && !c->req_close;
  c->cont_sent = 0;
  return 0;
}

// Answers every complete request buffered in `in` (until `out` holds OUT_HIGH).
static void http_process(struct sconn *c) {
  while (!c->closing && !c->failed && buf_avail(&c->out) < OUT_HIGH) {
    if (!c->head_len) {
      // Tolerate empty lines before a request line (RFC 9112 2.2).
      while (buf_avail(&c->in) && (c->in.p[c->in.off] == '\r' || c->in.p[c->in.off] == '\n')) c->in.off++;
      size_t avail = buf_avail(&c->in);
      if (!avail) return;
      size_t h = head_end(c->in.p + c->in.off, avail, &c->scan);
      if (!h) {
        if (avail > HTTP_MAX_HEAD) http_reject(c, 431, "Request Header Fields Too Large");
        return;
      }
      if (h > HTTP_MAX_HEAD) {
        http_reject(c, 431, "Request Header Fields Too Large");
        return;
      }
      c->head_len = h;
      if (http_parse_head(c) < 0) return;
    }
    uint64_t need = c->head_len + c->body_len;
    if (buf_avail(&c->in) < need) {
      if (c->expect && !c->cont_sent) {
        buf_printf(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        c->cont_sent = 1;
      }
      buf_reserve(&c->in, need - buf_avail(&c->in)); // read the body straight into place
      return;
    }
    const char *body = c->body_len ? c->in.p + c->in.off + c->head_len : "ok\n";
    size_t blen = c->body_len ? c->body_len : 3;
    char head[128];
    int hl = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n%s\r\n", blen,
                      c->req_close ? "Connection: close\r\n" : c->req_keepalive10 ? "Connection: keep-alive\r\n" : "");
    if (c->req_head) buf_put(&c->out, head, hl);
    else if (blen >= 16384) sconn_send2(c, head, hl, body, blen); // large: skip the copy
    else { // small: batch with other pipelined responses into one write
      buf_put(&c->out, head, hl);
      buf_put(&c->out, body, blen);
    }
    g_requests++;
    c->in.off += need;
    c->head_len = 0;
    c->scan = 0;
    if (c->req_close) {
      c->closing = 1;
      c->in.off = c->in.len = 0;
    }
  }
}

static void sink_consume(struct sconn *c, const unsigned char *p, size_t n) {
  while (n) {
    if (c->lenb_n < 8) {
      c->lenb[c->lenb_n++] = *p++;
      n--;
      if (c->lenb_n < 8) continue;
      c->sink_left = 0;
      for (int i = 0; i < 8; i++) c->sink_left = (c->sink_left << 8) | c->lenb[i];
    } else {
      size_t take = n < c->sink_left ? n : (size_t)c->sink_left;
      c->sink_left -= take;
      p += take;
      n -= take;
    }
    if (c->lenb_n == 8 && !c->sink_left) {
      buf_put(&c->out, "k", 1);
      g_transfers++;
      c->lenb_n = 0;
    }
  }
}

// Readable (or hung up / failed). Returns after closing c, or with c still alive.
static void sconn_readable(struct sconn *c) {
  for (int iter = 0; iter < 32; iter++) {
    char *dst = g_scratch;
    size_t room = sizeof g_scratch;
    if (g_mode == M_HTTP && !c->draining) {
      buf_reserve(&c->in, 16384);
      dst = c->in.p + c->in.len;
      room = c->in.cap - c->in.len;
    }
    ssize_t r = read(c->fd, dst, room);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) break;
    if (r <= 0) {
      sconn_close(c);
      return;
    }
    g_bytes_in += r;
    if (c->draining) continue;
    if (g_mode == M_ECHO) {
      sconn_send2(c, dst, r, "", 0);
    } else if (g_mode == M_SINK) {
      sink_consume(c, (unsigned char *)dst, r);
    } else {
      c->in.len += r;
      http_process(c);
    }
    if (buf_avail(&c->out) || c->closing || c->failed) {
      int f = sconn_flush(c);
      if (f < 0) {
        sconn_close(c);
        return;
      }
      if (f == 0 || c->draining) break; // paused until EPOLLOUT, or now only discarding
    }
  }
}

static void sconn_writable(struct sconn *c) {
  for (;;) {
    int f = sconn_flush(c);
    if (f < 0) {
      sconn_close(c);
      return;
    }
    if (f == 0 || g_mode != M_HTTP || c->draining) return;
    // Drained: answer pipelined requests that were left waiting while `out` was full.
    http_process(c);
    if (!buf_avail(&c->out) && !c->closing) return;
  }
}

static void expire_draining(void) {
  int64_t t = now_ns();
  for (int fd = 0; fd < g_nconns && g_draining; fd++) {
    struct sconn *c = g_conns[fd];
    if (c && c->draining && t - c->drain_since > DRAIN_NS) sconn_close(c);
  }
}

static void print_stats(void) {
  printf("{\"event\":\"stats\",\"accepted\":%llu,\"open\":%llu,\"requests\":%llu,\"transfers\":%llu,\"bytes_in\":%llu}\n",
         g_accepted, g_open, g_requests, g_transfers, g_bytes_in);
  fflush(stdout);
}

static void __attribute__((noreturn)) serve(const char *host, int port) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; // no SA_RESTART: epoll_wait returns EINTR and the loop prints
  sigaction(SIGUSR1, &sa, NULL);
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
    if (!host || inet_pton(AF_INET, host, &a->sin_addr) != 1) die("bad-host");
    sl = sizeof *a;
  }
  if (lfd < 0) die("socket");
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&ss, sl) < 0) die("bind");
  if (listen(lfd, 4096) < 0) die("listen");
  if (getsockname(lfd, (struct sockaddr *)&ss, &sl) == 0) // --port 0: report the port we got
    port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
  g_ep = epoll_create1(0);
  if (g_ep < 0) die("epoll_create1");
  static int listener_tag;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};
  epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &ev);
  static const char *mode_names[] = {"echo", "sink", "http"};
  printf("{\"event\":\"listening\",\"proto\":\"tcp\",\"impl\":\"native\",\"mode\":\"%s\",\"host\":\"%s\",\"port\":%d,\"pid\":%d}\n",
         mode_names[g_mode], host ? host : "::", port, (int)getpid());
  fflush(stdout);

  struct epoll_event evs[64];
  for (;;) {
    if (g_stats_wanted) {
      g_stats_wanted = 0;
      print_stats();
    }
    int n = epoll_wait(g_ep, evs, 64, g_draining ? 500 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == &listener_tag) {
        for (;;) {
          int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          nodelay(fd);
          if (fd >= g_nconns) {
            int nn = g_nconns ? g_nconns : 1024;
            while (nn <= fd) nn *= 2;
            g_conns = xrealloc(g_conns, nn * sizeof *g_conns);
            memset(g_conns + g_nconns, 0, (nn - g_nconns) * sizeof *g_conns);
            g_nconns = nn;
          }
          struct sconn *c = calloc(1, sizeof *c);
          if (!c) die("malloc");
          c->fd = fd;
          c->events = EPOLLIN | EPOLLRDHUP;
          struct epoll_event ce = {.events = c->events, .data.ptr = c};
          epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ce);
          g_conns[fd] = c;
          g_accepted++;
          g_open++;
        }
        continue;
      }
      struct sconn *c = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      // A conn closed earlier in this batch cannot be in it any more: fds are only closed from
      // here and EPOLL_CTL_DEL happens before close, but a *new* conn may reuse the fd - its
      // events carry the new pointer, so stale pointers never show up.
      if (e & EPOLLOUT) {
        int fd = c->fd;
        sconn_writable(c);
        if (g_conns[fd] != c) continue; // closed
      }
      if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if ((c->events & EPOLLIN) || (e & (EPOLLHUP | EPOLLERR))) sconn_readable(c);
      }
    }
    if (g_draining) expire_draining(); // after the batch: it may free conns the batch refers to
  }
}

// ---- client -----------------------------------------------------------------------------------

static struct addrinfo *g_ai;
static int g_timeout_ms = 10000;

static void resolve_target(const char *target) {
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
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  if (getaddrinfo(h, colon + 1, &hints, &g_ai) != 0) {
    errno = EINVAL;
    die("bad-target");
  }
}

static void set_timeouts(int fd) {
  struct timeval tv = {.tv_sec = g_timeout_ms / 1000, .tv_usec = (g_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); // bounds connect() too
}

static int new_socket(void) {
  int fd = socket(g_ai->ai_family, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  nodelay(fd);
  set_timeouts(fd);
  return fd;
}

static void connect_or_die(int fd) {
  for (;;) {
    if (connect(fd, g_ai->ai_addr, g_ai->ai_addrlen) == 0) return;
    if (errno == EINTR) continue;
    // With SO_SNDTIMEO, Linux ends a connect() that timed out with EINPROGRESS.
    if (errno == EINPROGRESS || errno == EAGAIN || errno == ETIMEDOUT) {
      errno = ETIMEDOUT;
      die("connect-timeout");
    }
    die("connect");
  }
}

static int dial(void) {
  int fd = new_socket();
  connect_or_die(fd);
  return fd;
}

// HTTP response parser states.
enum { H_HEAD, H_BODY, H_CHUNK_SIZE, H_CHUNK_DATA, H_CHUNK_END, H_TRAILER, H_UNTIL_CLOSE, H_DONE };

struct cconn {
  int fd;
  struct buf rb; // received, not yet parsed (http)
  size_t sent;   // bytes of the request written this round
  int64_t t0;
  long left;     // rounds still to do in this phase
  uint64_t echo_got;
  // http
  int st, status, server_close;
  size_t scan;
  uint64_t body_left;
};

static int g_http;
static long g_size;
static char *g_req;
static size_t g_req_len;
static unsigned long long g_resp_body, g_reconnects;

// Writes the rest of this round's request without blocking. 1: all written; 0: EAGAIN. (Never
// blocks, so a client can read the echo of a message larger than the socket buffers meanwhile.)
static int cconn_send(struct cconn *c) {
  while (c->sent < g_req_len) {
    ssize_t w = send(c->fd, g_req + c->sent, g_req_len - c->sent, MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      die("write");
    }
    c->sent += w;
  }
  return 1;
}

// A line in rb (for chunk sizes/trailers); NULL if incomplete.
static const char *rb_line(struct cconn *c, size_t *ll) {
  const char *p = c->rb.p + c->rb.off;
  const char *nl = memchr(p, '\n', buf_avail(&c->rb));
  if (!nl) {
    if (buf_avail(&c->rb) > 8192) die_msg("http-bad-response", "chunk-size/trailer line too long");
    return NULL;
  }
  *ll = nl - p;
  c->rb.off += *ll + 1;
  if (*ll && p[*ll - 1] == '\r') (*ll)--;
  return p;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// Advances the parser over rb. 1: a final response is complete; 0: needs more bytes.
static int http_parse_resp(struct cconn *c) {
  for (;;) {
    size_t avail = buf_avail(&c->rb);
    switch (c->st) {
    case H_HEAD: {
      const char *p = c->rb.p + c->rb.off;
      size_t h = head_end(p, avail, &c->scan);
      if (!h) {
        if (avail > 65536) die_msg("http-bad-response", "response head larger than 64 KiB");
        return 0;
      }
      size_t pos = 0, ll;
      const char *l;
      next_line(p, h, &pos, &l, &ll);
      if (ll < 12 || strncmp(l, "HTTP/1.", 7) || l[8] != ' ' || l[9] < '0' || l[9] > '9' || l[10] < '0' || l[10] > '9' ||
          l[11] < '0' || l[11] > '9')
        die_msg("http-bad-response", "bad status line: %.*s", (int)(ll < 80 ? ll : 80), l);
      c->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
      int64_t cl = -1;
      int chunked = 0;
      c->server_close = 0;
      while (next_line(p, h, &pos, &l, &ll) && ll) {
        const char *n, *v;
        size_t nl, vl;
        if (!split_header(l, ll, &n, &nl, &v, &vl)) continue; // be liberal in what we accept
        if (name_is(n, nl, "content-length")) {
          cl = parse_cl(v, vl);
          if (cl < 0) die_msg("http-bad-response", "bad Content-Length: %.*s", (int)vl, v);
        } else if (name_is(n, nl, "transfer-encoding")) {
          if (!has_token(v, vl, "chunked")) die_msg("http-bad-response", "unsupported Transfer-Encoding: %.*s", (int)vl, v);
          chunked = 1;
        } else if (name_is(n, nl, "connection")) {
          c->server_close |= has_token(v, vl, "close");
        }
      }
      c->rb.off += h;
      c->scan = 0;
      if (c->status >= 100 && c->status < 200) {
        if (c->status == 101) die_msg("http-bad-response", "unexpected 101 Switching Protocols");
        continue; // interim response: the final one follows
      }
      if (c->status == 204 || c->status == 304) c->st = H_DONE;
      else if (chunked) c->st = H_CHUNK_SIZE; // Transfer-Encoding wins over Content-Length
      else if (cl >= 0) {
        c->body_left = cl;
        c->st = cl ? H_BODY : H_DONE;
      } else c->st = H_UNTIL_CLOSE;
      break;
    }
    case H_BODY:
    case H_CHUNK_DATA:
    case H_UNTIL_CLOSE: {
      if (!avail) return 0;
      size_t take = c->st == H_UNTIL_CLOSE || avail < c->body_left ? avail : (size_t)c->body_left;
      c->rb.off += take;
      g_resp_body += take;
      if (c->st == H_UNTIL_CLOSE) return 0;
      c->body_left -= take;
      if (!c->body_left) c->st = c->st == H_BODY ? H_DONE : H_CHUNK_END;
      break;
    }
    case H_CHUNK_SIZE: {
      size_t ll;
      const char *l = rb_line(c, &ll);
      if (!l) return 0;
      uint64_t x = 0;
      size_t i = 0;
      for (; i < ll; i++) {
        int d = hexval(l[i]);
        if (d < 0) break;
        if (x >> 59) die_msg("http-bad-response", "chunk size overflow");
        x = x * 16 + d;
      }
      if (!i || (i < ll && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
        die_msg("http-bad-response", "bad chunk size line: %.*s", (int)(ll < 80 ? ll : 80), l);
      c->body_left = x;
      c->st = x ? H_CHUNK_DATA : H_TRAILER;
      break;
    }
    case H_CHUNK_END: {
      size_t ll;
      const char *l = rb_line(c, &ll);
      if (!l) return 0;
      if (ll) die_msg("http-bad-response", "chunk data not followed by CRLF");
      c->st = H_CHUNK_SIZE;
      break;
    }
    case H_TRAILER: {
      size_t ll;
      const char *l = rb_line(c, &ll);
      if (!l) return 0;
      if (!ll) c->st = H_DONE;
      break;
    }
    case H_DONE:
      c->st = H_HEAD;
      if (c->status < 200 || c->status > 299) die_msg("http-status", "HTTP status %d", c->status);
      return 1;
    }
  }
}

// Reads until this round's response is complete. 1: complete; 0: EAGAIN (nonblocking socket or
// flags = MSG_DONTWAIT, or the blocking socket's receive timeout).
static int cconn_recv(struct cconn *c, int flags) {
  for (;;) {
    if (g_http) {
      if (http_parse_resp(c)) return 1;
    } else if (c->echo_got >= (uint64_t)g_size) {
      return 1;
    }
    ssize_t r;
    if (g_http) {
      buf_reserve(&c->rb, 65536);
      r = recv(c->fd, c->rb.p + c->rb.len, c->rb.cap - c->rb.len, flags);
    } else {
      size_t want = g_size - c->echo_got;
      r = recv(c->fd, g_scratch, want < sizeof g_scratch ? want : sizeof g_scratch, flags);
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return 0;
      die("read");
    }
    if (r == 0) {
      if (g_http && c->st == H_UNTIL_CLOSE) {
        c->st = H_HEAD;
        c->server_close = 1;
        if (c->status < 200 || c->status > 299) die_msg("http-status", "HTTP status %d", c->status);
        return 1;
      }
      errno = ECONNRESET;
      die("closed");
    }
    if (g_http) c->rb.len += r;
    else c->echo_got += r;
  }
}

static void cconn_start(struct cconn *c) {
  c->sent = 0;
  c->echo_got = 0;
  c->t0 = now_ns();
}

// After a complete response: reconnect if the server is closing the connection.
static void cconn_after(struct cconn *c, int ep) {
  if (!g_http || !c->server_close) return;
  if (ep >= 0) epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = dial();
  c->rb.off = c->rb.len = 0;
  c->scan = 0;
  c->st = H_HEAD;
  g_reconnects++;
  if (ep >= 0) {
    set_nonblock(c->fd, 1);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
  }
}

static void timeout_die(void) {
  errno = ETIMEDOUT;
  die("timeout");
}

// One connection, no epoll: send, then a blocking read. Only when the request does not fit into
// the socket buffer at once, poll() for either direction and read what came back meanwhile.
static void run_blocking(struct cconn *c, long rounds, struct hist *h) {
  for (long i = 0; i < rounds; i++) {
    cconn_start(c);
    int done = 0;
    while (!done && !cconn_send(c)) {
      struct pollfd pf = {.fd = c->fd, .events = POLLIN | POLLOUT};
      int k = poll(&pf, 1, g_timeout_ms);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) die("poll");
      if (k == 0) timeout_die();
      if (pf.revents & (POLLIN | POLLERR | POLLHUP)) done = cconn_recv(c, MSG_DONTWAIT);
    }
    if (!done && !cconn_recv(c, 0)) timeout_die();
    if (h) hist_record(h, now_ns() - c->t0);
    cconn_after(c, -1);
  }
}

// N nonblocking connections, one epoll loop; each does `rounds` rounds, one in flight.
static void run_epoll(int ep, struct cconn *cs, int n, long rounds, struct hist *h) {
  int active = 0;
  for (int i = 0; i < n; i++) {
    struct cconn *c = &cs[i];
    c->left = rounds;
    if (!rounds) continue;
    active++;
    cconn_start(c);
    struct epoll_event e = {.events = cconn_send(c) ? EPOLLIN : EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
  }
  struct epoll_event evs[256];
  while (active) {
    int k = epoll_wait(ep, evs, 256, g_timeout_ms);
    if (k < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    if (k == 0) timeout_die();
    for (int j = 0; j < k; j++) {
      struct cconn *c = evs[j].data.ptr;
      if (!c->left) continue;
      if (c->sent < g_req_len && cconn_send(c)) { // the rest of the request went out
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
      }
      if (!cconn_recv(c, 0)) continue; // (also reads while the request is still being written)
      if (h) hist_record(h, now_ns() - c->t0);
      cconn_after(c, ep);
      if (--c->left == 0) {
        active--;
        continue;
      }
      cconn_start(c);
      struct epoll_event e = {.events = cconn_send(c) ? EPOLLIN : EPOLLIN | EPOLLOUT, .data.ptr = c};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    }
  }
}

static int client_pingpong(const char *path, const char *host_header, long size, long rounds, long warmup, int nconns) {
  g_size = size;
  struct buf req = {0};
  if (g_http) {
    if (size > 0) buf_printf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %ld\r\n\r\n", path, host_header, size);
    else buf_printf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host_header);
  }
  buf_reserve(&req, size);
  memset(req.p + req.len, 'a', size);
  req.len += size;
  g_req = req.p;
  g_req_len = req.len;

  struct cconn *cs = calloc(nconns, sizeof *cs);
  if (!cs) die("malloc");
  int ep = -1;
  if (nconns > 1) {
    ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
  }
  for (int i = 0; i < nconns; i++) {
    cs[i].fd = dial();
    if (ep >= 0) {
      set_nonblock(cs[i].fd, 1);
      struct epoll_event e = {.events = EPOLLIN, .data.ptr = &cs[i]};
      epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
    }
  }
  struct hist h;
  hist_init(&h);
  int64_t u0, s0, u1, s1;
  if (ep < 0) run_blocking(&cs[0], warmup, NULL);
  else run_epoll(ep, cs, nconns, warmup, NULL);
  unsigned long long body0 = g_resp_body, rec0 = g_reconnects;
  cpu_us(&u0, &s0);
  int64_t w0 = now_ns();
  if (ep < 0) run_blocking(&cs[0], rounds, &h);
  else run_epoll(ep, cs, nconns, rounds, &h);
  int64_t wall = now_ns() - w0;
  cpu_us(&u1, &s1);
  for (int i = 0; i < nconns; i++) close(cs[i].fd);
  long total = rounds * nconns;
  printf("{\"ok\":true,\"impl\":\"native\",\"mode\":\"%s\",\"size\":%ld,\"rounds\":%ld,\"rounds_per_conn\":%ld,\"warmup\":%ld,"
         "\"conns\":%d,\"samples\":%llu,",
         g_http ? "http" : "echo", size, total, rounds, warmup, nconns, (unsigned long long)h.n);
  hist_print_summary(&h, "");
  printf(",\"elapsed_us\":%lld,\"wall_us\":%lld,\"tps\":%.1f,\"rps\":%.1f,\"cpu_user_us\":%lld,\"cpu_sys_us\":%lld,\"cpu_us\":%lld",
         (long long)(wall / 1000), (long long)(wall / 1000), total / (wall / 1e9), total / (wall / 1e9), (long long)(u1 - u0),
         (long long)(s1 - s0), (long long)((u1 - u0) + (s1 - s0)));
  if (g_http) printf(",\"resp_body_bytes\":%llu,\"reconnects\":%llu", g_resp_body - body0, g_reconnects - rec0);
  printf(",\"hist\":");
  hist_print(&h);
  printf("}\n");
  fflush(stdout);
  return 0;
}

static int client_connect(long n, long warmup) {
  struct hist h, hc;
  hist_init(&h);
  hist_init(&hc);
  int64_t u0 = 0, s0 = 0, u1, s1, w0 = now_ns();
  char b = 'c';
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  g_completed = 0;
  for (long i = 0; i < warmup + n; i++) {
    if (i == warmup) {
      cpu_us(&u0, &s0);
      w0 = now_ns();
    }
    int fd = new_socket();
    int64_t t0 = now_ns();
    connect_or_die(fd);
    int64_t t1 = now_ns();
    for (;;) {
      ssize_t w = write(fd, &b, 1);
      if (w == 1) break;
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) timeout_die();
      die("write");
    }
    for (;;) {
      ssize_t r = read(fd, &b, 1);
      if (r == 1) break;
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN) timeout_die();
      if (r == 0) errno = ECONNRESET;
      die("read");
    }
    int64_t t2 = now_ns();
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); // close = RST: no TIME_WAIT anywhere
    close(fd);
    if (i >= warmup) {
      hist_record(&h, t2 - t0);
      hist_record(&hc, t1 - t0);
    }
    g_completed++;
  }
  int64_t wall = now_ns() - w0;
  cpu_us(&u1, &s1);
  printf("{\"ok\":true,\"impl\":\"native\",\"mode\":\"connect\",\"size\":1,\"rounds\":%ld,\"warmup\":%ld,\"conns\":%ld,\"samples\":%llu,",
         n, warmup, n, (unsigned long long)h.n);
  hist_print_summary(&h, "");
  printf(",\"connect_p50_us\":%.3f,\"connect_p90_us\":%.3f,\"connect_p99_us\":%.3f", hist_pct(&hc, 50) / 1000.0,
         hist_pct(&hc, 90) / 1000.0, hist_pct(&hc, 99) / 1000.0);
  printf(",\"elapsed_us\":%lld,\"wall_us\":%lld,\"tps\":%.1f,\"rps\":%.1f,\"cpu_user_us\":%lld,\"cpu_sys_us\":%lld,\"cpu_us\":%lld",
         (long long)(wall / 1000), (long long)(wall / 1000), n / (wall / 1e9), n / (wall / 1e9), (long long)(u1 - u0),
         (long long)(s1 - s0), (long long)((u1 - u0) + (s1 - s0)));
  printf(",\"hist\":");
  hist_print(&h);
  printf(",\"connect_hist\":");
  hist_print(&hc);
  printf("}\n");
  fflush(stdout);
  return 0;
}

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int client_bulk(long long bytes, long wsize, long reps, long warmup) {
  int fd = dial();
  char *chunk = malloc(wsize);
  double *rates = calloc(reps, sizeof *rates);
  if (!chunk || !rates) die("malloc");
  memset(chunk, 'b', wsize);
  int64_t u0 = 0, s0 = 0, u1, s1, elapsed = 0;
  for (long i = 0; i < warmup + reps; i++) {
    if (i == warmup) cpu_us(&u0, &s0);
    unsigned char hdr[8];
    for (int j = 0; j < 8; j++) hdr[j] = (unsigned char)((unsigned long long)bytes >> (56 - 8 * j));
    int64_t t0 = now_ns();
    for (size_t off = 0; off < 8;) {
      ssize_t w = write(fd, hdr + off, 8 - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) timeout_die();
      if (w < 0) die("write");
      off += w;
    }
    for (long long left = bytes; left > 0;) {
      ssize_t w = write(fd, chunk, left < wsize ? (size_t)left : (size_t)wsize);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) timeout_die();
      if (w < 0) die("write");
      left -= w;
    }
    char ack;
    for (;;) {
      ssize_t r = read(fd, &ack, 1);
      if (r == 1) break;
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN) timeout_die();
      if (r == 0) errno = ECONNRESET;
      die("read-ack");
    }
    int64_t dt = now_ns() - t0;
    if (i >= warmup) {
      elapsed += dt;
      rates[i - warmup] = bytes * 8.0 / (double)(dt > 0 ? dt : 1); // bit/ns = Gbit/s
    }
  }
  cpu_us(&u1, &s1);
  close(fd);
  qsort(rates, reps, sizeof *rates, cmp_dbl);
  double med = reps % 2 ? rates[reps / 2] : (rates[reps / 2 - 1] + rates[reps / 2]) / 2;
  long long total = bytes * reps;
  printf("{\"ok\":true,\"impl\":\"native\",\"mode\":\"bulk\",\"bytes\":%lld,\"bytes_per_rep\":%lld,\"reps\":%ld,\"warmup\":%ld,"
         "\"write_size\":%ld,\"elapsed_us\":%lld,\"gbit_s\":%.4f,\"median_gbit_s\":%.4f,\"min_gbit_s\":%.4f,\"max_gbit_s\":%.4f,"
         "\"cpu_user_us\":%lld,\"cpu_sys_us\":%lld,\"cpu_us\":%lld}\n",
         total, bytes, reps, warmup, wsize, (long long)(elapsed / 1000), total * 8.0 / (double)(elapsed > 0 ? elapsed : 1), med,
         rates[0], rates[reps - 1], (long long)(u1 - u0), (long long)(s1 - s0), (long long)((u1 - u0) + (s1 - s0)));
  fflush(stdout);
  return 0;
}

// ---- main -------------------------------------------------------------------------------------

static void __attribute__((noreturn)) usage(void) {
  fprintf(stderr,
          "usage: pingpong --serve --port P [--host ADDR] [--mode echo|sink|http]\n"
          "       pingpong --target HOST:PORT --size S --rounds R [--warmup W] [--conns N]\n"
          "                [--http [--path /p] [--host-header H]] [--timeout-ms T]\n"
          "       pingpong --target HOST:PORT --connect N [--warmup W] [--timeout-ms T]\n"
          "       pingpong --target HOST:PORT --bulk BYTES --size WRITE_SIZE [--reps K] [--warmup W]\n"
          "(see the header of bench/native/pingpong.c)\n");
  exit(2);
}

static long long num(const char *s, const char *opt) {
  char *e;
  errno = 0;
  long long x = strtoll(s, &e, 10);
  if (errno || e == s || *e || x < 0) {
    fprintf(stderr, "pingpong: %s wants a non-negative integer, got '%s'\n", opt, s);
    exit(2);
  }
  return x;
}

int main(int argc, char **argv) {
  const char *target = NULL, *host = NULL, *path = "/", *host_header = "bench";
  long size = -1, rounds = 1000, warmup = -1, conns = 1, connects = -1, reps = 1;
  long long bulk = -1;
  int port = -1, do_serve = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--serve")) do_serve = 1;
    else if (!strcmp(a, "--http")) g_http = 1;
    else if (!v) usage();
    else if (!strcmp(a, "--port")) port = num(argv[++i], a);
    else if (!strcmp(a, "--host")) host = argv[++i];
    else if (!strcmp(a, "--mode")) {
      i++;
      if (!strcmp(v, "echo")) g_mode = M_ECHO;
      else if (!strcmp(v, "sink")) g_mode = M_SINK;
      else if (!strcmp(v, "http")) g_mode = M_HTTP;
      else usage();
    } else if (!strcmp(a, "--target")) target = argv[++i];
    else if (!strcmp(a, "--size")) size = num(argv[++i], a);
    else if (!strcmp(a, "--rounds")) rounds = num(argv[++i], a);
    else if (!strcmp(a, "--warmup")) warmup = num(argv[++i], a);
    else if (!strcmp(a, "--conns")) conns = num(argv[++i], a);
    else if (!strcmp(a, "--path")) path = argv[++i];
    else if (!strcmp(a, "--host-header")) host_header = argv[++i];
    else if (!strcmp(a, "--connect")) connects = num(argv[++i], a);
    else if (!strcmp(a, "--bulk")) bulk = num(argv[++i], a);
    else if (!strcmp(a, "--reps")) reps = num(argv[++i], a);
    else if (!strcmp(a, "--timeout-ms")) g_timeout_ms = num(argv[++i], a);
    else usage();
  }
  if (do_serve) {
    if (port < 0 || port > 65535) {
      fprintf(stderr, "pingpong: --serve needs --port\n");
      return 2;
    }
    serve(host, port);
  }
  if (!target) usage();
  if (g_timeout_ms < 1) g_timeout_ms = 1;
  signal(SIGPIPE, SIG_IGN);
  resolve_target(target);
  if (connects >= 0) {
    if (connects < 1) usage();
    if (warmup < 0) warmup = connects / 10 < 100 ? connects / 10 : 100;
    return client_connect(connects, warmup);
  }
  if (bulk >= 0) {
    if (size < 1 || reps < 1) {
      fprintf(stderr, "pingpong: --bulk needs --size WRITE_SIZE >= 1 and --reps >= 1\n");
      return 2;
    }
    return client_bulk(bulk, size, reps, warmup < 0 ? 0 : warmup);
  }
  if (size < 0) size = 64;
  if (size < (g_http ? 0 : 1) || rounds < 1 || conns < 1 || conns > 100000 || path[0] == 0 ||
      strpbrk(path, " \r\n") || strpbrk(host_header, "\r\n")) {
    fprintf(stderr, "pingpong: client needs --size >= 1 (>= 0 with --http), --rounds >= 1, 1 <= --conns <= 100000,"
                    " and a --path/--host-header without spaces or line breaks\n");
    return 2;
  }
  if (warmup < 0) warmup = rounds / 10 < 1000 ? rounds / 10 : 1000;
  return client_pingpong(path, host_header, size, rounds, warmup, (int)conns);
}
