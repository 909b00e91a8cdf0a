/* scenload.c: load for the scalability scenario (bench/seed-scenario/run.sh, bench/scale.sh).
 *
 * N SSE subscribers spread over R rooms (subscriber i: room i % R, server port i % nports),
 * held by several processes from several 127.x.y.z source addresses, plus an open-loop API
 * load at fixed rates (one phase per rate) over C keep-alive connections from the parent.
 *
 * Two applications:
 *   -A board  the team board (scripts/): GET /api/rooms/:id/events as user s<i>; the API mix
 *             is list rooms / list posts / create post / react (-M percentages). A post's body
 *             and a reaction's user carry the marker px<seq>, which its event carries too.
 *   -A sse    bench/sse-app: GET /sub/room<r>; the load is POST /pub/room<r> with body px<seq>.
 *
 * Open loop: request k of a phase is due at t0 + k/rate; when no connection is idle it waits,
 * and its latency counts from when it was due (no coordinated omission). Publish-to-delivery
 * latency = receipt at a subscriber - the moment the publishing request was written (so it
 * includes the handler's database work). Every write answered 2xx must reach every subscriber
 * of its room that is still connected: deliveries are counted per request (shared memory).
 * The last lines are machine-readable: "RESULT phase=... k=v ..." and "CONNECT k=v ...".
 *
 * The subscriber processes poll their sockets every -w microseconds (default 500) instead of
 * sleeping in epoll_wait: on loopback, waking a sleeping reader runs inside the server's send
 * (sock_def_readable -> the wake-up of this process), so a client that sleeps on every event
 * bills the server for work a remote client does on its own machine. Receipt times are the
 * kernel's (SO_TIMESTAMPNS: when the last bytes of the read reached the socket), so polling does
 * not move the measured latencies. -w 0 sleeps in epoll_wait as a browser's machine would.
 *
 *   cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter -o scenload scenload.c -lev
 *   SCEN_DEBUG=1 in the environment logs each keep-alive connection the server closes between requests.
 */
#include <arpa/inet.h>
#include <ev.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum { MAX_PORTS = 16, MAX_PHASES = 8, MAX_PROCS = 64, LINE_MAX_ = 4096, NBUCKET = 61000,
       RESP_MAX = 262144 };
enum { T_ROOMS, T_POSTS, T_CREATE, T_REACT, T_PUB, NTYPES };
static const char *type_name[NTYPES] = { "list_rooms", "list_posts", "create_post", "react", "publish" };

/* ------------------------------------------------------------------ options */
static const char *host = "127.0.0.1";
static int ports[MAX_PORTS], nports = 0, nsubs = 10000, nrooms = 100, first_room = 1, first_post = 1;
static int board = 1, nphase = 0, rates[MAX_PHASES], conns = 64, nprocs = 0, nsrc = 0, inflight = 256;
static int mix[4] = { 20, 50, 20, 10 };
static int poll_us = 500;                /* -w: subscribers poll every N us (0: sleep in epoll_wait) */
static double phase_s = 30, settle_s = 2, connect_timeout_s = 120, drain_s = 5, gap_s = 2, req_timeout_s = 10;
static pid_t srv_pids[MAX_PORTS];
static int nsrv = 0;
static pid_t pg_pid = 0;
static uint32_t src_base;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Latency histogram: 10 µs buckets below 10 ms, 1 ms buckets up to 60 s. */
static int bucket_of(uint64_t us)
{
    if (us < 10000) return (int)(us / 10);
    uint64_t b = 1000 + (us - 10000) / 1000;
    return b >= NBUCKET ? NBUCKET - 1 : (int)b;
}
static double bucket_ms(int b) { return b < 1000 ? (b * 10 + 5) / 1000.0 : (10000 + (b - 1000) * 1000 + 500) / 1000.0; }
static double hist_pct(const uint32_t *h, double p, uint64_t *count)
{
    uint64_t n = 0;
    for (int b = 0; b < NBUCKET; b++) n += h[b];
    if (count) *count = n;
    if (!n) return -1;
    uint64_t want = (uint64_t)(p * (double)(n - 1)) + 1, c = 0;
    for (int b = 0; b < NBUCKET; b++) { c += h[b]; if (c >= want) return bucket_ms(b); }
    return -1;
}

/* ------------------------------------------------------------------ shared memory */
typedef struct {
    atomic_int connected, failed, closed, stop, children_up;
    atomic_uint_fast64_t t_last_connect;
    atomic_int error_taken;
    char first_error[240];
    atomic_uint_fast64_t events, marked, ooo;      /* all events, events with a marker, id not increasing */
    int phase_first[MAX_PHASES + 1];               /* seq ranges of the phases */
} shared_t;
static shared_t *sh;
static uint8_t *sub_state;              /* [nsubs] 0 connecting, 1 up, 2 closed, 3 failed */
static atomic_uint_fast64_t *t_sent;    /* [maxseq] µs when the request was written; 0 not yet */
static int32_t *seq_room;               /* [maxseq] room index */
static uint8_t *seq_ok;                 /* [maxseq] 1 = a publishing request answered 2xx */
static atomic_uint *recv_n;             /* [maxseq] deliveries */
static atomic_uint *dlv_hist;           /* [MAX_PHASES][NBUCKET] publish-to-delivery */
static int maxseq;

static void *shmem(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

static void note_error(const char *what, int err)
{
    if (atomic_exchange(&sh->error_taken, 1)) return;
    snprintf(sh->first_error, sizeof sh->first_error, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
}

static int phase_of(int seq)
{
    for (int p = 0; p < nphase; p++) if (seq < sh->phase_first[p + 1]) return p;
    return nphase - 1;
}

/* ------------------------------------------------------------------ subscribers (children) */
typedef struct {
    ev_io io;
    int idx;
    int status_seen, in_body;
    uint64_t last_id;
    uint16_t llen;
    char line[LINE_MAX_];
} sub_t;

static struct ev_loop *loop;
static sub_t *subs;
static int c_first, c_count, next_conn, done_conns;
static struct sockaddr_in dst[MAX_PORTS];

static void start_more(void);

static void sub_close(sub_t *s, int failed)
{
    ev_io_stop(loop, &s->io);
    close(s->io.fd);
    if (failed) {
        sub_state[s->idx] = 3;
        atomic_fetch_add(&sh->failed, 1);
        done_conns++;
        start_more();
    } else {
        sub_state[s->idx] = 2;
        atomic_fetch_add(&sh->closed, 1);
    }
}

static void on_data(const char *p, size_t n, uint64_t t)
{
    atomic_fetch_add_explicit(&sh->events, 1, memory_order_relaxed);
    const char *e = p + n;
    for (const char *q = p; q + 2 < e; q++) {
        q = memchr(q, 'p', (size_t)(e - q));
        if (!q || q + 2 >= e) return;
        if (q[1] != 'x' || q[2] < '0' || q[2] > '9') continue;
        long seq = 0;
        for (q += 2; q < e && *q >= '0' && *q <= '9'; q++) seq = seq * 10 + (*q - '0');
        if (seq < 0 || seq >= maxseq) return;
        uint64_t ts = atomic_load_explicit(&t_sent[seq], memory_order_acquire);
        if (!ts) return;
        atomic_fetch_add_explicit(&sh->marked, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&recv_n[seq], 1, memory_order_relaxed);
        int ph = phase_of((int)seq);
        atomic_fetch_add_explicit(&dlv_hist[(size_t)ph * NBUCKET + (size_t)bucket_of(t > ts ? t - ts : 0)], 1,
                                  memory_order_relaxed);
        return;
    }
}

static int on_line(sub_t *s, const char *l, size_t n, uint64_t t)
{
    if (!s->in_body) {
        if (!s->status_seen) {
            if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || memcmp(l + 9, "200", 3) != 0) {
                char m[120];
                snprintf(m, sizeof m, "subscribe refused: %.*s", (int)(n < 80 ? n : 80), l);
                note_error(m, 0);
                sub_close(s, 1);
                return 0;
            }
            s->status_seen = 1;
        } else if (n == 0) {
            s->in_body = 1;
            sub_state[s->idx] = 1;
            atomic_fetch_add(&sh->connected, 1);
            uint64_t prev = atomic_load(&sh->t_last_connect);
            while (prev < t && !atomic_compare_exchange_weak(&sh->t_last_connect, &prev, t)) {}
            done_conns++;
            start_more();
        }
        return 1;
    }
    if (n >= 5 && memcmp(l, "data:", 5) == 0) on_data(l + 5, n - 5, t);
    else if (n >= 3 && memcmp(l, "id:", 3) == 0) {
        uint64_t id = strtoull(l + 3, NULL, 10);
        if (id <= s->last_id) atomic_fetch_add_explicit(&sh->ooo, 1, memory_order_relaxed);
        s->last_id = id;
    }
    return 1;
}

static void on_read(struct ev_loop *l, ev_io *w, int revents)
{
    sub_t *s = (sub_t *)w;
    char buf[65536];
    union { char b[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } cb;
    struct iovec iov = { buf, sizeof buf };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b };
    ssize_t r = recvmsg(w->fd, &mh, 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (!s->in_body) note_error("subscribe: closed before the response header", r < 0 ? errno : 0);
        sub_close(s, !s->in_body);
        return;
    }
    uint64_t t = now_us();
    /* the kernel's receive time (CLOCK_REALTIME) moved onto the monotonic clock */
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS) continue;
        struct timespec rx, rt;
        memcpy(&rx, CMSG_DATA(cm), sizeof rx);
        clock_gettime(CLOCK_REALTIME, &rt);
        int64_t ago = ((int64_t)rt.tv_sec - rx.tv_sec) * 1000000 + ((int64_t)rt.tv_nsec - rx.tv_nsec) / 1000;
        if (ago > 0 && (uint64_t)ago < t) t -= (uint64_t)ago;
    }
    size_t start = 0;
    for (size_t i = 0; i < (size_t)r; i++) {
        if (buf[i] != '\n') continue;
        size_t n = i - start;
        const char *lp = buf + start;
        if (s->llen) {
            size_t room = LINE_MAX_ - s->llen, k = n < room ? n : room;
            memcpy(s->line + s->llen, lp, k);
            lp = s->line;
            n = s->llen + k;
            s->llen = 0;
        }
        if (n && lp[n - 1] == '\r') n--;
        if (!on_line(s, lp, n, t)) return;
        start = i + 1;
    }
    if (start < (size_t)r) {
        size_t n = (size_t)r - start, room = LINE_MAX_ - s->llen;
        if (n > room) n = room;
        memcpy(s->line + s->llen, buf + start, n);
        s->llen = (uint16_t)(s->llen + n);
    }
}

static void on_connected(struct ev_loop *l, ev_io *w, int revents)
{
    sub_t *s = (sub_t *)w;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { note_error("subscribe connect", err); sub_close(s, 1); return; }
    char req[512];
    int room = first_room + s->idx % nrooms, rl;
    if (board)
        rl = snprintf(req, sizeof req, "GET /api/rooms/%d/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                      "X-User: s%d\r\n\r\n", room, host, s->idx);
    else
        rl = snprintf(req, sizeof req, "GET /sub/room%d HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
                      room, host);
    if (write(w->fd, req, (size_t)rl) != rl) { note_error("write subscribe request", errno); sub_close(s, 1); return; }
    ev_io_stop(l, w);
    ev_io_init(w, on_read, w->fd, EV_READ);
    ev_io_start(l, w);
}

static void start_one(sub_t *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    if (fd < 0) { note_error("socket", errno); sub_state[s->idx] = 3; atomic_fetch_add(&sh->failed, 1); done_conns++; return; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(src_base + (uint32_t)(s->idx % nsrc)) };
    const struct sockaddr_in *d = &dst[s->idx % nports];
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0 ||
        (connect(fd, (const struct sockaddr *)d, sizeof *d) < 0 && errno != EINPROGRESS)) {
        note_error("subscribe bind/connect", errno);
        close(fd); sub_state[s->idx] = 3; atomic_fetch_add(&sh->failed, 1); done_conns++;
        return;
    }
    ev_io_init(&s->io, on_connected, fd, EV_WRITE);
    ev_io_start(loop, &s->io);
}

static void start_more(void)
{
    while (next_conn < c_count && next_conn - done_conns < inflight) start_one(&subs[next_conn++]);
}

static void on_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    if (atomic_load(&sh->stop)) ev_break(l, EVBREAK_ALL);
    start_more();
}

static void child(int first, int count)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    c_first = first;
    c_count = count;
    loop = ev_loop_new(EVFLAG_AUTO);
    subs = calloc((size_t)count, sizeof *subs);
    for (int i = 0; i < count; i++) subs[i].idx = first + i;
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    atomic_fetch_add(&sh->children_up, 1);
    start_more();
    if (poll_us > 0) {
        struct timespec nap = { 0, (long)poll_us * 1000 };
        while (!atomic_load(&sh->stop)) {
            ev_run(loop, EVRUN_NOWAIT);
            nanosleep(&nap, NULL);
        }
    } else {
        ev_run(loop, 0);
    }
    _exit(0);
}

/* ------------------------------------------------------------------ /proc accounting */
static long rss_kb(pid_t pid)
{
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) { kb = atol(line + 6); break; }
    fclose(f);
    return kb;
}

/* utime+stime of pid, and its parent pid */
static long cpu_ticks2(pid_t pid, pid_t *ppid)
{
    char p[64], b[2048];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(b, 1, sizeof b - 1, f);
    fclose(f);
    b[n] = '\0';
    char *s = strrchr(b, ')');
    if (!s) return -1;
    unsigned long ut = 0, st = 0;
    int pp = 0;
    if (sscanf(s + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &pp, &ut, &st) != 3) return -1;
    if (ppid) *ppid = pp;
    return (long)(ut + st);
}
static long cpu_ticks(pid_t pid) { return cpu_ticks2(pid, NULL); }

/* ns the threads of pid spent runnable but waiting for a CPU (other load on the machine) */
static long long rq_wait_ns(pid_t pid)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/task", (int)pid);
    DIR *d = opendir(p);
    if (!d) return 0;
    long long sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char f[300];
        snprintf(f, sizeof f, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *fp = fopen(f, "r");
        if (!fp) continue;
        long long run = 0, wait = 0;
        if (fscanf(fp, "%lld %lld", &run, &wait) == 2) sum += wait;
        fclose(fp);
    }
    closedir(d);
    return sum;
}

/* CPU of a process and its direct children (PostgreSQL: the postmaster and its backends). */
static long cpu_tree(pid_t root)
{
    long sum = cpu_ticks(root);
    DIR *d = opendir("/proc");
    if (!d) return sum;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        pid_t pid = atoi(e->d_name), pp = 0;
        long t = cpu_ticks2(pid, &pp);
        if (t >= 0 && pp == root) sum += t;
    }
    closedir(d);
    return sum;
}

/* ------------------------------------------------------------------ the API load (parent) */
typedef struct {
    ev_io io;
    int fd, busy, idx, queued;
    int seq, type;
    uint64_t t_due, t_write;
    size_t len;
    char buf[RESP_MAX];
} conn_t;

enum { ST_RUN, ST_DRAIN, ST_GAP };
static int state = ST_GAP;
static conn_t *cs;
/* idle connections, first in first out: every connection keeps being used (the server closes a
 * connection that sent no request within its header_timeout) */
static int *idle_q, idle_head, nidle;
static int *last_post;                  /* per room: a post to react to */
typedef struct {
    int rate, issued, total, done, ok, non2xx, sockerr, timeouts;
    uint64_t t0, t_end_issue;
    int status_counts[6];               /* 1xx..5xx, other */
    uint32_t hist[NTYPES + 1][NBUCKET];  /* per type, [NTYPES] = all */
    long srv_cpu0[MAX_PORTS], srv_cpu1[MAX_PORTS], pg0, pg1, sub0, sub1, self0, self1;
    long long rq0, rq1;                 /* run-queue wait of the servers' threads, ns */
    int idle_closes;                    /* keep-alive connections the server closed between requests */
    uint32_t sec_max_us[64];            /* worst API latency per second of the phase (by due time) */
    uint8_t sec_rq_pct[64];             /* run-queue wait of the servers' threads per second, % */
    int aborted;                        /* stopped issuing: the phase ran past twice its length */
} phase_t;
static phase_t *ph;
static int cur = -1, running_phase = 0;
static uint64_t phase_wait_until;
static pid_t kids[MAX_PROCS];
static int nkids;
static uint32_t rng = 2463534242u;
static uint32_t xrand(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

static void conn_open(conn_t *c);
static void issue_on(conn_t *c, int seq, uint64_t due);

static void conn_idle(conn_t *c)
{
    c->busy = 0;
    /* a request that was due while every connection was busy goes first */
    if (running_phase && cur >= 0 && ph[cur].issued < ph[cur].total) {
        phase_t *p = &ph[cur];
        uint64_t due = p->t0 + (uint64_t)((double)p->issued * 1e6 / p->rate);
        if (due <= now_us()) { issue_on(c, sh->phase_first[cur] + p->issued++, due); return; }
    }
    if (!c->queued) { c->queued = 1; idle_q[(idle_head + nidle++) % conns] = c->idx; }
}

static void finish(conn_t *c, int status, int sockerr)
{
    phase_t *p = &ph[phase_of(c->seq)];
    uint64_t t = now_us();
    p->done++;
    if (sockerr) { p->sockerr++; }
    else {
        int k = status / 100 - 1;
        p->status_counts[k >= 0 && k < 5 ? k : 5]++;
        if (status >= 200 && status < 400) {
            p->ok++;
            if (c->type == T_CREATE || c->type == T_REACT || c->type == T_PUB) seq_ok[c->seq] = 1;
        } else p->non2xx++;
    }
    if (!sockerr) {
        uint64_t sec = (c->t_due - p->t0) / 1000000u, lat = t - c->t_due;
        if (sec < 64 && lat > p->sec_max_us[sec]) p->sec_max_us[sec] = (uint32_t)lat;
        int b = bucket_of(t - c->t_due);
        p->hist[c->type][b]++;
        p->hist[NTYPES][b]++;
    }
}

static void conn_fail(conn_t *c, const char *what, int err)
{
    if (c->busy) finish(c, 0, 1);
    else if (cur >= 0) {
        if (getenv("SCEN_DEBUG"))
            fprintf(stderr, "idle close: conn %d, %.3f s into phase %d (state %d), %s\n", c->idx,
                    (double)(now_us() - ph[cur].t0) / 1e6, cur + 1, state, what);
        ph[cur].idle_closes++;
    }
    if (!atomic_load(&sh->error_taken)) note_error(what, err);
    ev_io_stop(loop, &c->io);
    close(c->fd);
    c->fd = -1;
    c->busy = 0;
    conn_open(c);
}

static size_t find_clen(const char *h, size_t n)
{
    for (size_t i = 0; i + 16 < n; i++) {
        if ((h[i] == '\n') && strncasecmp(h + i + 1, "content-length:", 15) == 0) return strtoul(h + i + 16, NULL, 10);
    }
    return 0;
}

static void on_api_read(struct ev_loop *l, ev_io *w, int revents)
{
    conn_t *c = (conn_t *)w;
    ssize_t r = read(c->fd, c->buf + c->len, RESP_MAX - 1 - c->len);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        conn_fail(c, "API connection closed by the server", r < 0 ? errno : 0);
        return;
    }
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    char *he = strstr(c->buf, "\r\n\r\n");
    if (!he) {
        if (c->len >= RESP_MAX - 1) conn_fail(c, "API response header too large", 0);
        return;
    }
    size_t hl = (size_t)(he - c->buf) + 4;
    if (memmem(c->buf, hl, "chunked", 7)) { conn_fail(c, "chunked API response (not supported by scenload)", 0); return; }
    size_t clen = find_clen(c->buf, hl);
    if (c->len < hl + clen) {
        if (hl + clen >= RESP_MAX - 1) conn_fail(c, "API response too large", 0);
        return;
    }
    if (!c->busy) { conn_fail(c, "unexpected API response", 0); return; }
    int status = atoi(c->buf + 9);
    if (c->type == T_CREATE && status == 201) {
        char *q = memmem(c->buf + hl, clen, "\"id\":", 5);
        if (q) last_post[seq_room[c->seq]] = atoi(q + 5);
    }
    int close_after = memmem(c->buf, hl, "onnection: close", 16) != NULL;
    finish(c, status, 0);
    if (c->len > hl + clen) { conn_fail(c, "extra bytes after an API response", 0); return; }
    c->len = 0;
    if (close_after) {
        ev_io_stop(loop, &c->io);
        close(c->fd);
        c->fd = -1;
        c->busy = 0;
        conn_open(c);
        return;
    }
    conn_idle(c);
}

static void issue_on(conn_t *c, int seq, uint64_t due)
{
    char req[1024], body[256];
    int rl, bl = 0, room = (int)(xrand() % (uint32_t)nrooms), type;
    if (!board) type = T_PUB;
    else {
        int x = (int)(xrand() % 100);
        type = x < mix[0] ? T_ROOMS : x < mix[0] + mix[1] ? T_POSTS : x < mix[0] + mix[1] + mix[2] ? T_CREATE : T_REACT;
    }
    seq_room[seq] = room;
    switch (type) {
    case T_ROOMS:
        rl = snprintf(req, sizeof req, "GET /api/rooms?limit=20 HTTP/1.1\r\nHost: %s\r\nX-User: w%d\r\n\r\n", host, c->idx);
        break;
    case T_POSTS:
        rl = snprintf(req, sizeof req, "GET /api/rooms/%d/posts?limit=20 HTTP/1.1\r\nHost: %s\r\nX-User: w%d\r\n\r\n",
                      first_room + room, host, c->idx);
        break;
    case T_CREATE:
        bl = snprintf(body, sizeof body, "{\"body\":\"px%d hello from the scenario, room %d\"}", seq, first_room + room);
        rl = snprintf(req, sizeof req, "POST /api/rooms/%d/posts HTTP/1.1\r\nHost: %s\r\nX-User: w%d\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                      first_room + room, host, c->idx, bl, body);
        break;
    case T_REACT:
        bl = snprintf(body, sizeof body, "{\"emoji\":\"\xf0\x9f\x91\x8d\"}");
        rl = snprintf(req, sizeof req, "POST /api/posts/%d/reactions HTTP/1.1\r\nHost: %s\r\nX-User: px%d\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                      last_post[room], host, seq, bl, body);
        break;
    default:
        bl = snprintf(body, sizeof body, "px%d", seq);
        rl = snprintf(req, sizeof req, "POST /pub/room%d HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\n\r\n%s", first_room + room, host, bl, body);
    }
    c->busy = 1;
    c->seq = seq;
    c->type = type;
    c->t_due = due;
    c->t_write = now_us();
    atomic_store_explicit(&t_sent[seq], c->t_write, memory_order_release);
    if (write(c->fd, req, (size_t)rl) != rl) conn_fail(c, "API write", errno);
}

static void conn_open(conn_t *c)
{
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);     /* blocking connect on loopback: instant */
    if (c->fd < 0) { note_error("API socket", errno); return; }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const struct sockaddr_in *d = &dst[c->idx % nports];
    if (connect(c->fd, (const struct sockaddr *)d, sizeof *d) < 0) {
        note_error("API connect", errno);
        close(c->fd);
        c->fd = -1;
        return;     /* the tick retries */
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->len = 0;
    ev_io_init(&c->io, on_api_read, c->fd, EV_READ);
    ev_io_start(loop, &c->io);
    conn_idle(c);
}

/* ------------------------------------------------------------------ phases */
static double hist_max(const uint32_t *h)
{
    for (int b = NBUCKET - 1; b >= 0; b--) if (h[b]) return bucket_ms(b);
    return -1;
}

static long kids_cpu(void)
{
    long s = 0;
    for (int i = 0; i < nkids; i++) { long t = cpu_ticks(kids[i]); if (t > 0) s += t; }
    return s;
}

static void sample_cpu(long *srv, long *pg, long *sub, long *self)
{
    for (int i = 0; i < nsrv; i++) srv[i] = cpu_ticks(srv_pids[i]);
    *pg = pg_pid ? cpu_tree(pg_pid) : 0;
    *sub = kids_cpu();
    *self = cpu_ticks(getpid());
}
static long long servers_rq(void)
{
    long long s = 0;
    for (int i = 0; i < nsrv; i++) s += rq_wait_ns(srv_pids[i]);
    return s;
}

/* Delivery accounting of phase p against the subscribers up now. */
typedef struct { long publishes, expected, delivered, lost, extra; } dlv_t;
static dlv_t deliveries(int p)
{
    dlv_t d = { 0, 0, 0, 0, 0 };
    int *up = calloc((size_t)nrooms, sizeof *up);
    for (int i = 0; i < nsubs; i++) if (sub_state[i] == 1) up[i % nrooms]++;
    for (int s = sh->phase_first[p]; s < sh->phase_first[p + 1]; s++) {
        long got = atomic_load_explicit(&recv_n[s], memory_order_relaxed);
        if (!seq_ok[s]) { d.extra += got; continue; }
        long want = up[seq_room[s]];
        d.publishes++;
        d.expected += want;
        d.delivered += got < want ? got : want;
        if (got < want) d.lost += want - got; else d.extra += got - want;
    }
    free(up);
    return d;
}

static void report_phase(int p, dlv_t d)
{
    phase_t *x = &ph[p];
    long clk = sysconf(_SC_CLK_TCK);
    double secs = (double)(x->t_end_issue - x->t0) / 1e6;
    uint32_t dh[NBUCKET];
    for (int b = 0; b < NBUCKET; b++) dh[b] = atomic_load(&dlv_hist[(size_t)p * NBUCKET + (size_t)b]);
    double span = (double)(now_us() - x->t0) / 1e6;
    long srv = 0;
    for (int i = 0; i < nsrv; i++) srv += x->srv_cpu1[i] - x->srv_cpu0[i];
    long rss = 0;
    for (int i = 0; i < nsrv; i++) { long r = rss_kb(srv_pids[i]); if (r > 0) rss += r; }
    uint64_t n;
    double p50 = hist_pct(x->hist[NTYPES], 0.50, &n), p95 = hist_pct(x->hist[NTYPES], 0.95, NULL),
           p99 = hist_pct(x->hist[NTYPES], 0.99, NULL), mx = hist_max(x->hist[NTYPES]);
    printf("phase %d: %d req/s for %.0f s: %d requests issued, %d answered in %.2f s = %.0f req/s\n", p + 1, x->rate,
           phase_s, x->issued, x->done, secs, secs > 0 ? x->done / secs : 0);
    printf("  API latency ms (from when each request was due): p50 %.2f p95 %.2f p99 %.2f max %.1f\n", p50, p95, p99, mx);
    for (int t = 0; t < NTYPES; t++) {
        uint64_t k;
        double a = hist_pct(x->hist[t], 0.50, &k);
        if (!k) continue;
        printf("    %-12s %7llu  p50 %.2f p95 %.2f p99 %.2f max %.1f\n", type_name[t], (unsigned long long)k, a,
               hist_pct(x->hist[t], 0.95, NULL), hist_pct(x->hist[t], 0.99, NULL), hist_max(x->hist[t]));
    }
    if (x->aborted) printf("  ABORTED: %d requests not sent (the phase ran past twice its length)\n", x->aborted);
    printf("  worst API latency in each second, ms (and %% of that second sluice's threads waited for a CPU):");
    for (int i = 0; i < 64 && i < (int)(2 * phase_s); i++) {
        if (!x->sec_max_us[i] && i >= (int)phase_s) break;
        printf(" %.0f(%d%%)", x->sec_max_us[i] / 1e3, x->sec_rq_pct[i]);
    }
    printf("\n");
    printf("  responses: 2xx/3xx %d, 4xx %d, 5xx %d, other %d; socket errors %d (timeouts %d)\n", x->ok,
           x->status_counts[3], x->status_counts[4], x->status_counts[0] + x->status_counts[5], x->sockerr, x->timeouts);
    double dp50 = hist_pct(dh, 0.50, NULL), dp95 = hist_pct(dh, 0.95, NULL), dp99 = hist_pct(dh, 0.99, NULL),
           dmx = hist_max(dh);
    printf("  deliveries: %ld publishing writes ok, %ld (subscriber, event) pairs expected, %ld delivered, %ld lost,"
           " %ld extra; latency ms p50 %.2f p95 %.2f p99 %.2f max %.1f\n",
           d.publishes, d.expected, d.delivered, d.lost, d.extra, dp50, dp95, dp99, dmx);
    double cpu_srv = 100.0 * (double)srv / (double)clk / span, cpu_pg = 100.0 * (double)(x->pg1 - x->pg0) / (double)clk / span,
           cpu_sub = 100.0 * (double)(x->sub1 - x->sub0) / (double)clk / span,
           cpu_self = 100.0 * (double)(x->self1 - x->self0) / (double)clk / span;
    double rq_pct = 100.0 * (double)(x->rq1 - x->rq0) / 1e9 / span;
    printf("  CPU over %.1f s (%% of one core): sluice %.0f%%, postgres or redis (-g) %.0f%%, subscribers %.0f%%, API load %.0f%%;"
           " sluice threads waited for a CPU %.0f%% of the time; sluice RSS %ld KB; subscribers up %d, closed so far %d;"
           " idle keep-alive connections closed by the server %d\n",
           span, cpu_srv, cpu_pg, cpu_sub, cpu_self, rq_pct, rss, atomic_load(&sh->connected) - atomic_load(&sh->closed),
           atomic_load(&sh->closed), x->idle_closes);
    printf("RESULT phase=%d rate=%d secs=%.0f issued=%d answered=%d rps=%.0f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f max_ms=%.1f"
           " ok=%d c4xx=%d c5xx=%d sockerr=%d timeouts=%d publishes=%ld expected=%ld delivered=%ld lost=%ld extra=%ld"
           " dlv_p50_ms=%.2f dlv_p95_ms=%.2f dlv_p99_ms=%.2f dlv_max_ms=%.1f cpu_sluice=%.0f cpu_pg=%.0f cpu_subs=%.0f"
           " cpu_load=%.0f rq_wait_pct=%.0f rss_kb=%ld closed=%d ooo=%llu idle_closes=%d not_sent=%d\n",
           p + 1, x->rate, phase_s, x->issued, x->done, secs > 0 ? x->done / secs : 0, p50, p95, p99, mx, x->ok,
           x->status_counts[3], x->status_counts[4], x->sockerr, x->timeouts, d.publishes, d.expected, d.delivered,
           d.lost, d.extra, dp50, dp95, dp99, dmx, cpu_srv, cpu_pg, cpu_sub, cpu_self, rq_pct, rss, atomic_load(&sh->closed),
           (unsigned long long)atomic_load(&sh->ooo), x->idle_closes, x->aborted);
    fflush(stdout);
}

static int fails_total = 0;

static void start_phase(int p)
{
    cur = p;
    phase_t *x = &ph[p];
    x->t0 = now_us();
    sample_cpu(x->srv_cpu0, &x->pg0, &x->sub0, &x->self0);
    x->rq0 = servers_rq();
    running_phase = 1;
    state = ST_RUN;
}

static void on_api_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    uint64_t t = now_us();
    for (int i = 0; i < conns; i++) {
        conn_t *c = &cs[i];
        if (c->fd < 0) conn_open(c);
        else if (c->busy && t - c->t_write > (uint64_t)(req_timeout_s * 1e6)) {
            ph[phase_of(c->seq)].timeouts++;
            conn_fail(c, "API request timed out", 0);
        }
    }
    if (state == ST_RUN) {
        phase_t *x = &ph[cur];
        static long long rq_last;
        static int sec_last = -1;
        int sec = (int)((t - x->t0) / 1000000u);
        if (sec != sec_last) {
            long long rq = servers_rq();
            if (sec_last >= 0 && sec_last < 64) {
                long long pct = (rq - rq_last) / 10000000;
                x->sec_rq_pct[sec_last] = (uint8_t)(pct > 255 ? 255 : pct < 0 ? 0 : pct);
            }
            rq_last = rq;
            sec_last = sec;
        }
        if (x->issued < x->total && t - x->t0 > (uint64_t)(2 * phase_s * 1e6)) {
            x->aborted = x->total - x->issued;   /* bound the run: the server fell too far behind */
            x->total = x->issued;
            sec_last = -1;
        }
        while (x->issued < x->total && nidle > 0) {
            uint64_t due = x->t0 + (uint64_t)((double)x->issued * 1e6 / x->rate);
            if (due > t) break;
            conn_t *c = &cs[idle_q[idle_head]];
            idle_head = (idle_head + 1) % conns;
            nidle--;
            c->queued = 0;
            if (c->busy || c->fd < 0) continue;
            issue_on(c, sh->phase_first[cur] + x->issued++, due);
        }
        if (x->issued == x->total && x->done >= x->total) {
            x->t_end_issue = now_us();
            running_phase = 0;
            state = ST_DRAIN;
            sec_last = -1;
            phase_wait_until = t + (uint64_t)(drain_s * 1e6);
        }
    } else if (state == ST_DRAIN) {
        static uint64_t last_check;
        if (t - last_check < 50000 && t < phase_wait_until) return;
        last_check = t;
        dlv_t d = deliveries(cur);
        if (d.lost == 0 || t >= phase_wait_until) {
            phase_t *x = &ph[cur];
            sample_cpu(x->srv_cpu1, &x->pg1, &x->sub1, &x->self1);
            x->rq1 = servers_rq();
            report_phase(cur, d);
            if (d.lost || x->non2xx || x->sockerr) fails_total++;
            if (cur + 1 >= nphase) { ev_break(l, EVBREAK_ALL); return; }
            state = ST_GAP;
            phase_wait_until = t + (uint64_t)(gap_s * 1e6);
        }
    } else if (state == ST_GAP && t >= phase_wait_until) {
        start_phase(cur + 1);
    }
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (!s) break;
        s++;
    }
    return n;
}

static void usage(const char *me)
{
    fprintf(stderr,
            "usage: %s [-A board|sse] [-H host] [-p port[,port...]] [-n subscribers] [-r rooms] [-f first_room_id]\n"
            "  [-q first_post_id] [-R rate[,rate...]] [-d seconds_per_phase] [-c api_connections]\n"
            "  [-M list_rooms,list_posts,create_post,react (percent)] [-b first_source_addr] [-a n_source_addrs]\n"
            "  [-P subscriber_processes] [-i inflight_subscribes] [-k server_pid[,pid...]] [-g postgres_pid]\n"
            "  [-s settle_s] [-D drain_s] [-G gap_s] [-T connect_timeout_s] [-w subscriber_poll_us (0: sleep in epoll)]\n", me);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *src = "127.0.1.1";
    int o, pidv[MAX_PORTS];
    while ((o = getopt(argc, argv, "A:H:p:n:r:f:q:R:d:c:M:b:a:P:i:k:g:s:D:G:T:w:")) != -1) {
        switch (o) {
        case 'A': board = strcmp(optarg, "sse") != 0; break;
        case 'H': host = optarg; break;
        case 'p': nports = parse_list(optarg, ports, MAX_PORTS); break;
        case 'n': nsubs = atoi(optarg); break;
        case 'r': nrooms = atoi(optarg); break;
        case 'f': first_room = atoi(optarg); break;
        case 'q': first_post = atoi(optarg); break;
        case 'R': nphase = parse_list(optarg, rates, MAX_PHASES); break;
        case 'd': phase_s = atof(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'M': if (parse_list(optarg, mix, 4) != 4) usage(argv[0]); break;
        case 'b': src = optarg; break;
        case 'a': nsrc = atoi(optarg); break;
        case 'P': nprocs = atoi(optarg); break;
        case 'i': inflight = atoi(optarg); break;
        case 'k': nsrv = parse_list(optarg, pidv, MAX_PORTS); for (int i = 0; i < nsrv; i++) srv_pids[i] = pidv[i]; break;
        case 'g': pg_pid = atoi(optarg); break;
        case 's': settle_s = atof(optarg); break;
        case 'D': drain_s = atof(optarg); break;
        case 'G': gap_s = atof(optarg); break;
        case 'T': connect_timeout_s = atof(optarg); break;
        case 'w': poll_us = atoi(optarg); if (poll_us < 0 || poll_us > 100000) usage(argv[0]); break;
        default: usage(argv[0]);
        }
    }
    if (!nports) { ports[0] = 5000; nports = 1; }
    if (!nphase) { rates[0] = 1000; nphase = 1; }
    if (nsubs < 0 || nrooms < 1 || conns < 1 || inflight < 1) usage(argv[0]);
    struct in_addr ia;
    if (inet_pton(AF_INET, src, &ia) != 1) usage(argv[0]);
    src_base = ntohl(ia.s_addr);
    for (int i = 0; i < nports; i++) {
        dst[i].sin_family = AF_INET;
        dst[i].sin_port = htons((uint16_t)ports[i]);
        if (inet_pton(AF_INET, host, &dst[i].sin_addr) != 1) usage(argv[0]);
    }
    if (nsrc <= 0) nsrc = (nsubs + 9999) / 10000 + 1;
    if (nprocs <= 0) nprocs = (nsubs + 4999) / 5000;
    if (nprocs < 1) nprocs = 1;
    if (nprocs > MAX_PROCS) nprocs = MAX_PROCS;
    signal(SIGPIPE, SIG_IGN);

    sh = shmem(sizeof *sh);
    sh->phase_first[0] = 0;
    for (int p = 0; p < nphase; p++)
        sh->phase_first[p + 1] = sh->phase_first[p] + (int)((double)rates[p] * phase_s);
    maxseq = sh->phase_first[nphase] + 1;
    sub_state = shmem((size_t)nsubs + 1);
    t_sent = shmem((size_t)maxseq * sizeof *t_sent);
    seq_room = shmem((size_t)maxseq * sizeof *seq_room);
    seq_ok = shmem((size_t)maxseq);
    recv_n = shmem((size_t)maxseq * sizeof *recv_n);
    dlv_hist = shmem((size_t)MAX_PHASES * NBUCKET * sizeof *dlv_hist);
    ph = calloc((size_t)nphase, sizeof *ph);
    for (int p = 0; p < nphase; p++) { ph[p].rate = rates[p]; ph[p].total = sh->phase_first[p + 1] - sh->phase_first[p]; }

    long rss0[MAX_PORTS], rss1[MAX_PORTS];
    for (int i = 0; i < nsrv; i++) rss0[i] = rss_kb(srv_pids[i]);
    printf("scenload: %s app, %d subscribers over %d rooms on %d port(s) from %d source address(es) %s.. in %d"
           " process(es); API load %d connection(s), phases:", board ? "board" : "sse", nsubs, nrooms, nports, nsrc,
           src, nprocs, conns);
    for (int p = 0; p < nphase; p++) printf(" %d", rates[p]);
    printf(" req/s x %.0f s", phase_s);
    if (board) printf("; mix %% list rooms %d, list posts %d, create post %d, react %d", mix[0], mix[1], mix[2], mix[3]);
    printf("\n");
    fflush(stdout);

    /* ---------------------------------------------------------------- connect the subscribers */
    uint64_t t_start = now_us();
    if (nsubs > 0) {
        for (int p = 0, at = 0; p < nprocs; p++) {
            int n = nsubs / nprocs + (p < nsubs % nprocs);
            kids[p] = fork();
            if (kids[p] < 0) { perror("fork"); return 1; }
            if (kids[p] == 0) child(at, n);
            at += n;
        }
        nkids = nprocs;
    }
    uint64_t deadline = t_start + (uint64_t)(connect_timeout_s * 1e6);
    int conn = 0, fail = 0;
    while ((conn = atomic_load(&sh->connected)) + (fail = atomic_load(&sh->failed)) < nsubs && now_us() < deadline)
        sleep_s(0.01);
    uint64_t t_conn = atomic_load(&sh->t_last_connect);
    double conn_s = t_conn > t_start ? (double)(t_conn - t_start) / 1e6 : 0;
    printf("connect: %d subscribed, %d failed%s in %.2f s: %.0f subscribes/s\n", conn, fail,
           conn + fail < nsubs ? " (timed out)" : "", conn_s, conn_s > 0 ? conn / conn_s : 0);
    if (sh->first_error[0]) printf("  first error: %s\n", sh->first_error);
    fflush(stdout);
    /* settle: presence.join storms of the board drain, memory reaches its idle level */
    uint64_t ev0;
    do { ev0 = atomic_load(&sh->events); sleep_s(settle_s); } while (atomic_load(&sh->events) != ev0 && now_us() < deadline);
    long rss_sum0 = 0, rss_sum1 = 0;
    printf("server RSS:");
    for (int i = 0; i < nsrv; i++) {
        rss1[i] = rss_kb(srv_pids[i]);
        rss_sum0 += rss0[i];
        rss_sum1 += rss1[i];
        int on = 0;
        for (int s = 0; s < nsubs; s++) if (s % nports == i % nports && sub_state[s] == 1) on++;
        printf(" [pid %d: %ld -> %ld KB, %d subscribers, %.0f B each]", (int)srv_pids[i], rss0[i], rss1[i], on,
               on ? (double)(rss1[i] - rss0[i]) * 1024.0 / on : 0);
    }
    printf("\n");
    printf("CONNECT n=%d connected=%d failed=%d connect_s=%.2f connect_rate=%.0f rss0_kb=%ld rss1_kb=%ld rss_per_sub_b=%.0f"
           " events_during_connect=%llu\n", nsubs, conn, fail, conn_s, conn_s > 0 ? conn / conn_s : 0, rss_sum0, rss_sum1,
           conn ? (double)(rss_sum1 - rss_sum0) * 1024.0 / conn : 0, (unsigned long long)atomic_load(&sh->events));
    fflush(stdout);
    sh->error_taken = 0;   /* from here, the first API or stream error */
    sh->first_error[0] = '\0';

    /* ---------------------------------------------------------------- the API phases */
    loop = EV_DEFAULT;
    last_post = calloc((size_t)nrooms, sizeof *last_post);
    for (int r = 0; r < nrooms; r++) last_post[r] = first_post + r;
    cs = calloc((size_t)conns, sizeof *cs);
    idle_q = calloc((size_t)conns, sizeof *idle_q);
    cur = 0;
    for (int i = 0; i < conns; i++) { cs[i].idx = i; cs[i].fd = -1; conn_open(&cs[i]); }
    ev_timer tick;
    ev_timer_init(&tick, on_api_tick, 0.001, 0.001);
    ev_timer_start(loop, &tick);
    phase_wait_until = now_us() + 500000;
    cur = -1;
    state = ST_GAP;
    ev_run(loop, 0);
    if (sh->first_error[0]) printf("first error during the API phases: %s\n", sh->first_error);

    atomic_store(&sh->stop, 1);
    for (int p = 0; p < nkids; p++) waitpid(kids[p], NULL, 0);
    return (conn == nsubs && fails_total == 0) ? 0 : 1;
}
