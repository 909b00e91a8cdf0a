/* sseload.c: SSE load generator for bench/sse.sh: N subscribers, M publishes, delivery latency.
 *
 * Opens N EventSource-like subscribers (GET <sub-path> with Accept: text/event-stream) spread
 * over several source addresses (127.0.x.y, bound before connect) and several processes (the
 * open-files limit here is 20,000 per process), reports the connect rate and the server's RSS
 * per idle subscriber (VmRSS of -k PID before and after), then POSTs M events one after the
 * other. Each event's data is "<seq> <t>", t = CLOCK_MONOTONIC in µs taken just before the
 * publish request is written; every subscriber computes receipt time - t. The next publish
 * goes out once every live subscriber has the current one (or after -w seconds).
 * All subscribers must get every event exactly once, in order; lost, duplicated and
 * out-of-order deliveries are counted. The last line is machine-readable (RESULT k=v ...).
 *
 *   cc -O2 -o sseload bench/sseload.c -lev
 *   sseload -p 5081 -n 9500 -m 20 -k $(pidof sluice)
 */
#include <arpa/inet.h>
#include <ev.h>
#include <errno.h>
#include <fcntl.h>
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

enum { LINE_MAX_ = 480, PROC_MAX = 64 };
#define NONE UINT32_MAX

/* ------------------------------------------------------------------ options */
static const char *host = "127.0.0.1", *sub_path = "/sub/bench", *pub_path = "/pub/bench";
static int port = 5081, nsubs = 9500, npub = 20, nprocs = 0, nsrc = 0, inflight = 256;
static int per_proc = 18000, verbose = 0;
static pid_t server_pid = 0;
static double settle_s = 2, wait_s = 10, gap_s = 0.05, connect_timeout_s = 120;
static uint32_t src_base;   /* host order, first source address */

/* ------------------------------------------------------------------ shared with the children */
typedef struct {
    atomic_int connected, failed, closed, children_up, stop;
    atomic_uint_fast64_t t_last_connect;    /* µs, latest completed subscribe in any child */
    char first_error[200];
    atomic_int error_taken;
    /* per subscriber */
    uint32_t *lat;      /* [nsubs * npub] µs, NONE = not received */
    uint32_t *dup, *ooo, *bad;
    uint8_t *dead;
    atomic_uint *received;  /* [npub] deliveries per event */
} shared;
static shared *sh;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void note_error(const char *fmt, const char *what, int err)
{
    if (atomic_exchange(&sh->error_taken, 1)) return;
    snprintf(sh->first_error, sizeof sh->first_error, fmt, what, err ? strerror(err) : "");
}

static void *shmem(size_t n)
{
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

/* ------------------------------------------------------------------ a subscriber */
typedef struct {
    ev_io io;
    int idx;            /* global subscriber index */
    int in_body;        /* response header done */
    int last_seq;       /* -1 before the first event */
    int pend_seq;       /* data line of the event being read, -1 none */
    uint64_t pend_ts;
    uint16_t llen;      /* partial line carried between reads */
    char line[LINE_MAX_];
} sub;

static struct ev_loop *loop;
static sub *subs;
static int first, count, next_conn, open_conns, done_conns;
static char sub_req[512];
static size_t sub_req_len;
static struct sockaddr_in dst;

static void start_more(void);

static void sub_close(sub *s, int failed)
{
    ev_io_stop(loop, &s->io);
    close(s->io.fd);
    s->io.fd = -1;
    open_conns--;
    if (failed) { atomic_fetch_add(&sh->failed, 1); done_conns++; start_more(); }
    else { sh->dead[s->idx] = 1; atomic_fetch_add(&sh->closed, 1); }
}

static void dispatch(sub *s, uint64_t t)
{
    int q = s->pend_seq;
    s->pend_seq = -1;
    if (q < 0 || q >= npub) { sh->bad[s->idx]++; return; }
    uint32_t *slot = &sh->lat[(size_t)s->idx * (size_t)npub + (size_t)q];
    if (*slot != NONE) { sh->dup[s->idx]++; return; }
    *slot = t > s->pend_ts ? (uint32_t)(t - s->pend_ts) : 0;
    if (q < s->last_seq) sh->ooo[s->idx]++;
    s->last_seq = q;
    atomic_fetch_add(&sh->received[q], 1);
}

/* One line of the response (CR stripped). Returns 0 when the subscriber was closed. */
static int on_line(sub *s, const char *l, size_t n, uint64_t t)
{
    if (!s->in_body) {
        if (s->last_seq == -2) {        /* the status line */
            if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || memcmp(l + 9, "200", 3) != 0) {
                char st[64];
                snprintf(st, sizeof st, "%.*s", (int)(n < 60 ? n : 60), l);
                note_error("subscribe refused: %s%s", st, 0);
                sub_close(s, 1);
                return 0;
            }
            s->last_seq = -1;
        } else if (n == 0) {
            s->in_body = 1;
            atomic_fetch_add(&sh->connected, 1);
            uint64_t prev = atomic_load(&sh->t_last_connect);
            while (prev < t && !atomic_compare_exchange_weak(&sh->t_last_connect, &prev, t)) {}
            done_conns++;
            start_more();
        }
        return 1;
    }
    if (n == 0) { if (s->pend_seq >= 0) dispatch(s, t); return 1; }
    if (n >= 5 && memcmp(l, "data:", 5) == 0) {
        const char *p = l + 5, *e = l + n;
        if (p < e && *p == ' ') p++;
        char tmp[64];
        size_t k = (size_t)(e - p) < sizeof tmp - 1 ? (size_t)(e - p) : sizeof tmp - 1;
        memcpy(tmp, p, k);
        tmp[k] = '\0';
        unsigned long long ts;
        int q;
        if (sscanf(tmp, "%d %llu", &q, &ts) == 2) { s->pend_seq = q; s->pend_ts = ts; }
        else sh->bad[s->idx]++;
    }
    return 1;   /* id:, event:, retry:, comments: ignored */
}

static void on_read(struct ev_loop *l, ev_io *w, int revents)
{
    sub *s = (sub *)w;
    char buf[65536];
    ssize_t r = read(w->fd, buf, sizeof buf);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (!s->in_body) note_error("subscribe: connection closed before the response header%s%s", "", r < 0 ? errno : 0);
        sub_close(s, !s->in_body);
        return;
    }
    uint64_t t = now_us();
    size_t i = 0, start = 0;
    for (; i < (size_t)r; i++) {
        if (buf[i] != '\n') continue;
        size_t n = i - start;
        const char *lp = buf + start;
        if (s->llen) {      /* join with the carried part */
            size_t room = LINE_MAX_ - s->llen;
            size_t k = n < room ? n : room;
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
    sub *s = (sub *)w;
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) { note_error("connect: %s%s", "", err); sub_close(s, 1); return; }
    /* the request is small: one write into an empty socket buffer */
    if (write(w->fd, sub_req, sub_req_len) != (ssize_t)sub_req_len) {
        note_error("write subscribe request%s: %s", "", errno);
        sub_close(s, 1);
        return;
    }
    ev_io_stop(l, w);
    ev_io_init(w, on_read, w->fd, EV_READ);
    ev_io_start(l, w);
}

static void start_one(sub *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    if (fd < 0) { note_error("socket%s: %s", "", errno); atomic_fetch_add(&sh->failed, 1); done_conns++; return; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* the port is picked at connect() time, per (source, destination): ~28k per source address */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = { .sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(src_base + (uint32_t)(s->idx % nsrc)) };
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        note_error("bind source address%s: %s", "", errno);
        close(fd); atomic_fetch_add(&sh->failed, 1); done_conns++; return;
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        note_error("connect%s: %s", "", errno);
        close(fd); atomic_fetch_add(&sh->failed, 1); done_conns++; return;
    }
    s->last_seq = -2;
    s->pend_seq = -1;
    open_conns++;
    ev_io_init(&s->io, on_connected, fd, EV_WRITE);
    ev_io_start(loop, &s->io);
}

/* Keeps at most `inflight` subscribes pending, so the server's accept queue never overflows. */
static void start_more(void)
{
    while (next_conn < count && (next_conn - done_conns) < inflight)
        start_one(&subs[next_conn++]);
}

static void on_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    if (atomic_load(&sh->stop)) ev_break(l, EVBREAK_ALL);
    start_more();   /* in case a failure path returned without starting the next one */
}

static void child(int first_, int count_)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    first = first_;
    count = count_;
    loop = ev_loop_new(EVFLAG_AUTO);
    subs = calloc((size_t)count, sizeof *subs);
    for (int i = 0; i < count; i++) subs[i].idx = first + i;
    atomic_fetch_add(&sh->children_up, 1);
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.05, 0.05);
    ev_timer_start(loop, &tick);
    start_more();
    ev_run(loop, 0);
    _exit(0);
}

/* ------------------------------------------------------------------ the parent */
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

static long cpu_ticks(pid_t pid)   /* utime + stime of the whole process */
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
    /* after "comm)": state is field 3; utime and stime are fields 14 and 15 */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    return (long)(ut + st);
}

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* POSTs one event; returns the HTTP status, or -1. `t0` is taken just before the write. */
static int publish(int seq, uint64_t *t0)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0) { close(fd); return -1; }
    char body[64], req[512];
    *t0 = now_us();
    int bl = snprintf(body, sizeof body, "%d %llu", seq, (unsigned long long)*t0);
    int rl = snprintf(req, sizeof req,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      pub_path, host, bl, body);
    if (write(fd, req, (size_t)rl) != rl) { close(fd); return -1; }
    char resp[1024];
    ssize_t r = read(fd, resp, sizeof resp - 1);
    close(fd);
    if (r < 12) return -1;
    resp[r] = '\0';
    return atoi(resp + 9);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void usage(const char *me)
{
    fprintf(stderr,
            "usage: %s [-H host] [-p port] [-n subscribers] [-m publishes] [-k server_pid]\n"
            "  [-S sub_path] [-U pub_path] [-b first_source_addr] [-a n_source_addrs]\n"
            "  [-P processes] [-c inflight_connects] [-s settle_s] [-w wait_per_event_s]\n"
            "  [-g gap_s] [-T connect_timeout_s] [-v]\n", me);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *src = "127.0.0.1";
    int o;
    while ((o = getopt(argc, argv, "H:p:n:m:k:S:U:b:a:P:c:s:w:g:T:v")) != -1) {
        switch (o) {
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': nsubs = atoi(optarg); break;
        case 'm': npub = atoi(optarg); break;
        case 'k': server_pid = (pid_t)atoi(optarg); break;
        case 'S': sub_path = optarg; break;
        case 'U': pub_path = optarg; break;
        case 'b': src = optarg; break;
        case 'a': nsrc = atoi(optarg); break;
        case 'P': nprocs = atoi(optarg); break;
        case 'c': inflight = atoi(optarg); break;
        case 's': settle_s = atof(optarg); break;
        case 'w': wait_s = atof(optarg); break;
        case 'g': gap_s = atof(optarg); break;
        case 'T': connect_timeout_s = atof(optarg); break;
        case 'v': verbose = 1; break;
        default: usage(argv[0]);
        }
    }
    if (nsubs < 1 || npub < 1 || inflight < 1) usage(argv[0]);
    struct in_addr ia;
    if (inet_pton(AF_INET, src, &ia) != 1 || inet_pton(AF_INET, host, &dst.sin_addr) != 1) usage(argv[0]);
    src_base = ntohl(ia.s_addr);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)port);
    if (nsrc <= 0) nsrc = (nsubs + 9999) / 10000;   /* <= 10k per source address */
    if (nprocs <= 0) nprocs = (nsubs + per_proc - 1) / per_proc;
    if (nprocs > PROC_MAX) nprocs = PROC_MAX;
    sub_req_len = (size_t)snprintf(sub_req, sizeof sub_req,
                                   "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                                   "Cache-Control: no-cache\r\n\r\n", sub_path, host);
    signal(SIGPIPE, SIG_IGN);

    sh = shmem(sizeof *sh);
    sh->lat = shmem((size_t)nsubs * (size_t)npub * sizeof(uint32_t));
    memset(sh->lat, 0xff, (size_t)nsubs * (size_t)npub * sizeof(uint32_t));
    sh->dup = shmem((size_t)nsubs * sizeof(uint32_t));
    sh->ooo = shmem((size_t)nsubs * sizeof(uint32_t));
    sh->bad = shmem((size_t)nsubs * sizeof(uint32_t));
    sh->dead = shmem((size_t)nsubs);
    sh->received = shmem((size_t)npub * sizeof(atomic_uint));

    long rss0 = server_pid ? rss_kb(server_pid) : -1;
    printf("sseload: %d subscribers on %s:%d%s from %d source address(es) %s.. in %d process(es); %d publishes to %s\n",
           nsubs, host, port, sub_path, nsrc, src, nprocs, npub, pub_path);
    fflush(stdout);

    uint64_t t_start = now_us();
    pid_t kids[PROC_MAX];
    for (int p = 0, at = 0; p < nprocs; p++) {
        int n = nsubs / nprocs + (p < nsubs % nprocs);
        kids[p] = fork();
        if (kids[p] < 0) { perror("fork"); return 1; }
        if (kids[p] == 0) child(at, n);
        at += n;
    }

    /* connect phase */
    uint64_t deadline = t_start + (uint64_t)(connect_timeout_s * 1e6);
    int conn, fail;
    while ((conn = atomic_load(&sh->connected)) + (fail = atomic_load(&sh->failed)) < nsubs && now_us() < deadline)
        sleep_s(0.01);
    uint64_t t_conn = atomic_load(&sh->t_last_connect);
    double conn_s = t_conn > t_start ? (double)(t_conn - t_start) / 1e6 : 0;
    printf("connect: %d subscribed, %d failed%s in %.2f s: %.0f subscribes/s\n", conn, fail,
           conn + fail < nsubs ? " (timed out)" : "", conn_s, conn_s > 0 ? conn / conn_s : 0);
    if (sh->first_error[0]) printf("  first error: %s\n", sh->first_error);
    fflush(stdout);

    sleep_s(settle_s);
    long rss1 = server_pid ? rss_kb(server_pid) : -1;
    double per_sub = (rss0 >= 0 && rss1 >= 0 && conn > 0) ? (double)(rss1 - rss0) * 1024.0 / conn : -1;
    if (server_pid)
        printf("server RSS: %ld KB before, %ld KB with %d subscribers: %.0f bytes per subscriber\n",
               rss0, rss1, conn, per_sub);
    fflush(stdout);     /* a profiler waiting for this line starts now */

    /* publish phase: one event at a time, the next once everyone live has the current one */
    long cpu0 = server_pid ? cpu_ticks(server_pid) : -1, lcpu0 = 0, lcpu1 = 0;
    for (int p = 0; p < nprocs; p++) lcpu0 += cpu_ticks(kids[p]);
    uint64_t tp0 = now_us();
    int pub_fail = 0, timeouts = 0;
    uint32_t *last_of = calloc((size_t)npub, sizeof *last_of);
    for (int q = 0; q < npub && conn > 0; q++) {
        uint64_t t0 = 0;
        int st = publish(q, &t0);
        if (st < 200 || st > 299) { pub_fail++; printf("  publish %d: status %d\n", q, st); }
        uint64_t until = now_us() + (uint64_t)(wait_s * 1e6);
        int want;
        while ((int)atomic_load(&sh->received[q]) < (want = conn - atomic_load(&sh->closed)) && now_us() < until)
            sleep_s(0.001);
        if ((int)atomic_load(&sh->received[q]) < want) timeouts++;
        if (verbose) printf("  event %d: %u of %d delivered after %.1f ms\n", q,
                            atomic_load(&sh->received[q]), want, (double)(now_us() - t0) / 1e3);
        sleep_s(gap_s);
    }
    sleep_s(0.5);   /* late duplicates */
    uint64_t tp1 = now_us();
    long cpu1 = server_pid ? cpu_ticks(server_pid) : -1;
    for (int p = 0; p < nprocs; p++) lcpu1 += cpu_ticks(kids[p]);
    long rss2 = server_pid ? rss_kb(server_pid) : -1;
    atomic_store(&sh->stop, 1);
    for (int p = 0; p < nprocs; p++) waitpid(kids[p], NULL, 0);

    /* statistics over every (subscriber, event) pair */
    size_t total = (size_t)nsubs * (size_t)npub, got = 0;
    uint32_t *all = malloc(total * sizeof *all);
    long dups = 0, ooo = 0, bad = 0, dead = 0;
    for (int i = 0; i < nsubs; i++) {
        dups += sh->dup[i]; ooo += sh->ooo[i]; bad += sh->bad[i]; dead += sh->dead[i];
        for (int q = 0; q < npub; q++) {
            uint32_t v = sh->lat[(size_t)i * (size_t)npub + (size_t)q];
            if (v != NONE) { all[got++] = v; if (v > last_of[q]) last_of[q] = v; }
        }
    }
    long lost = (long)conn * npub - (long)got;
    qsort(all, got, sizeof *all, cmp_u32);
    qsort(last_of, (size_t)npub, sizeof *last_of, cmp_u32);
    double p50 = got ? all[(size_t)(0.50 * (double)(got - 1))] / 1e3 : -1;
    double p99 = got ? all[(size_t)(0.99 * (double)(got - 1))] / 1e3 : -1;
    double mx = got ? all[got - 1] / 1e3 : -1, mn = got ? all[0] / 1e3 : -1;
    long clk = sysconf(_SC_CLK_TCK);
    double cpu_ms = (cpu0 >= 0 && cpu1 >= 0) ? (double)(cpu1 - cpu0) * 1e3 / (double)clk : -1;
    printf("delivery: %zu of %ld (subscriber, event) pairs; latency ms min %.1f p50 %.1f p99 %.1f max %.1f;"
           " last delivery per event: median %.1f ms\n",
           got, (long)conn * npub, mn, p50, p99, mx, npub ? last_of[npub / 2] / 1e3 : 0);
    printf("errors: lost %ld, duplicated %ld, out of order %ld, unparsable %ld, closed by server %ld,"
           " publish failures %d, events not complete within %.0f s %d\n",
           lost, dups, ooo, bad, dead, pub_fail, wait_s, timeouts);
    if (server_pid)
        printf("server: %.0f ms CPU over the %.1f s publish phase (%.2f us per delivery); RSS after %ld KB\n",
               cpu_ms, (double)(tp1 - tp0) / 1e6, got ? cpu_ms * 1e3 / (double)got : 0, rss2);
    double lcpu_ms = (double)(lcpu1 - lcpu0) * 1e3 / (double)clk;
    printf("sseload: %.0f ms CPU in the subscriber processes over the publish phase (%.2f us per delivery)\n",
           lcpu_ms, got ? lcpu_ms * 1e3 / (double)got : 0);
    printf("RESULT n=%d connected=%d failed=%d connect_s=%.3f connect_rate=%.0f rss0_kb=%ld rss1_kb=%ld"
           " rss_per_sub_b=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f got=%zu lost=%ld dup=%ld ooo=%ld"
           " bad=%ld closed=%ld pub_fail=%d timeouts=%d cpu_ms=%.0f load_cpu_ms=%.0f\n",
           nsubs, conn, fail, conn_s, conn_s > 0 ? conn / conn_s : 0, rss0, rss1, per_sub, p50, p99, mx,
           got, lost, dups, ooo, bad, dead, pub_fail, timeouts, cpu_ms, lcpu_ms);
    return (conn == nsubs && lost == 0 && dups == 0 && ooo == 0 && pub_fail == 0) ? 0 : 1;
}
