/* test_rbus.c: rbus against a real redis-server: URL parsing, the GCRA script agreeing with
 * ratelimit.c decision for decision, the publish script's ids, the cache INCR script, deadlines. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "rbus.h"
#include "ctx.h"
#include "sconfig.h"
#include "ratelimit.h"
#include "tap.h"

static struct ev_loop *loop;
static const redisReply *got;
static redisReply *copy;
static char goterr[256];
static int done;

static redisReply *dup_reply(const redisReply *r)
{
    if (!r) return NULL;
    redisReply *d = calloc(1, sizeof *d);
    d->type = r->type;
    d->integer = r->integer;
    if (r->str) { d->str = strndup(r->str, r->len); d->len = r->len; }
    if (r->elements) {
        d->elements = r->elements;
        d->element = calloc(r->elements, sizeof *d->element);
        for (size_t i = 0; i < r->elements; i++) d->element[i] = dup_reply(r->element[i]);
    }
    return d;
}

static void free_dup(redisReply *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->elements; i++) free_dup(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

static void cb(void *ud, const redisReply *r, const char *err)
{
    free_dup(copy);
    copy = dup_reply(r);
    got = copy;
    snprintf(goterr, sizeof goterr, "%s", err ? err : "");
    done = 1;
}

/* Runs the loop until the callback fired (or 2 s). */
static int wait_reply(rbus_op *op)
{
    if (!op) return -1;
    done = 0;
    for (int i = 0; i < 2000 && !done; i++) ev_run(loop, EVRUN_ONCE);
    return done ? 0 : -1;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_urls(void)
{
    char host[256], pass[256], user[128];
    int port, db;
    const char *err;
    ok(rbus_parse_url("redis://localhost", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) == 0 &&
           strcmp(host, "localhost") == 0 && port == 6379 && db == 0 && !pass[0], "redis://localhost");
    ok(rbus_parse_url("redis://:s3cret@10.0.0.5:6380/2", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) == 0 &&
           strcmp(host, "10.0.0.5") == 0 && port == 6380 && db == 2 && strcmp(pass, "s3cret") == 0 && !user[0],
       "password, port and db");
    ok(rbus_parse_url("redis://app:pw@[::1]:7000", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) == 0 &&
           strcmp(host, "::1") == 0 && port == 7000 && strcmp(user, "app") == 0 && strcmp(pass, "pw") == 0,
       "ACL user and IPv6 host");
    ok(rbus_parse_url("unix:///run/redis.sock", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) == 0 &&
           strcmp(host, "/run/redis.sock") == 0 && port == 0, "unix socket");
    ok(rbus_parse_url("redis://h:99999", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) < 0, "bad port: %s", err);
    ok(rbus_parse_url("rediss://h", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) < 0, "TLS refused: %s", err);
    ok(rbus_parse_url("http://h", host, sizeof host, &port, pass, sizeof pass, user, sizeof user, &db, &err) < 0, "wrong scheme");
}

/* Same policy, same sequence of requests: Redis and the local table must agree. */
static void gcra_parity(worker *w, ratelimit *rl, const char *name, uint64_t limit, uint64_t window_ms, uint64_t burst, int n)
{
    static uint32_t pid = 100;
    rl_policy pol = {pid++, limit, window_ms, burst};
    uint64_t win_ns = window_ms * 1000000u, T = win_ns / limit + (win_ns % limit != 0), B = burst ? burst : limit;
    char ts[32], bs[32], key[64];
    snprintf(ts, sizeof ts, "%llu", (unsigned long long)T);
    snprintf(bs, sizeof bs, "%llu", (unsigned long long)B);
    snprintf(key, sizeof key, "t:rl:%s", name);
    /* one clock for both (Redis takes it as ARGV[4] here; in production it reads TIME): a burst
     * at t0, then requests every T/3, and a pause of a whole window in the middle */
    uint64_t now = 1700000000000ull, step = T / 3000000u + 1;
    int agree = 1, admitted = 0, burst_admitted = -1;
    for (int i = 0; i < n; i++) {
        if (i >= n / 2) now += step;
        if (i == 3 * n / 4) now += window_ms;
        if (i == n / 2) burst_admitted = admitted;
        rl_result loc;
        ratelimit_check(rl, &pol, name, strlen(name), now, &loc);
        char nows[32];
        snprintf(nows, sizeof nows, "%llu", (unsigned long long)now);
        const char *av[] = {key, ts, bs, "1", nows};
        if (wait_reply(rbus_eval(w, RBUS_GCRA, 1, 5, av, NULL, 1.0, cb, NULL)) || !got || got->type != REDIS_REPLY_ARRAY ||
            got->elements != 4) {
            ok(0, "%s: GCRA script answered (%s)", name, goterr);
            return;
        }
        long long allowed = got->element[0]->integer, rem = got->element[1]->integer;
        long long retry = got->element[2]->integer, reset = got->element[3]->integer;
        admitted += allowed == 1;
        if (allowed != loc.allowed || (uint64_t)rem != loc.remaining || retry != (long long)loc.retry_after_ms ||
            reset != (long long)loc.reset_ms) {
            printf("#   %s #%d: redis {%lld %lld %lld %lld} local {%d %llu %llu %llu}\n", name, i, allowed, rem, retry,
                   reset, loc.allowed, (unsigned long long)loc.remaining, (unsigned long long)loc.retry_after_ms,
                   (unsigned long long)loc.reset_ms);
            agree = 0;
        }
    }
    ok(agree, "%s: Redis GCRA gives ratelimit.c's exact answers on %d requests", name, n);
    ok(burst_admitted == (int)(B < (uint64_t)n / 2 ? B : (uint64_t)n / 2), "%s: the burst admits exactly B = %llu (got %d)", name,
       (unsigned long long)B, burst_admitted);
    ok(admitted > burst_admitted, "%s: refills over time (%d admitted in all)", name, admitted);
}

int main(void)
{
    test_urls();
    signal(SIGPIPE, SIG_IGN);
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("# skip: redis-server not installed\n");
        return tap_done();
    }
    int port = free_port();
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    pid_t rp = fork();
    if (rp == 0) {
        execlp("redis-server", "redis-server", "--port", ps, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", "/tmp", "--loglevel", "warning", "--enable-debug-command", "yes", (char *)NULL);
        _exit(127);
    }
    usleep(300000);

    loop = ev_loop_new(EVFLAG_AUTO);
    server srv;
    memset(&srv, 0, sizeof srv);
    srv.nworkers = 1;
    sconfig cfg;
    memset(&cfg, 0, sizeof cfg);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    cfg.redis_url = url;
    cfg.redis_prefix = "t:";
    char err[256];
    ok(rbus_server_init(&srv, &cfg, err, sizeof err) == 0 && srv.rbus, "server init");
    worker w;
    memset(&w, 0, sizeof w);
    w.srv = &srv;
    w.loop = loop;
    w.idx = 1;                      /* no subscriber: worker 0 owns it */
    ok(rbus_worker_init(&w) == 0, "worker init");
    for (int i = 0; i < 3000 && !rbus_ready(&w); i++) ev_run(loop, EVRUN_ONCE);
    ok(rbus_ready(&w), "connected");

    const char *ping[] = {"PING"};
    ok(wait_reply(rbus_command(&w, 1, ping, NULL, 1.0, cb, NULL)) == 0 && got && got->type == REDIS_REPLY_STATUS &&
           strcmp(got->str, "PONG") == 0, "PING -> PONG");
    const char *bad[] = {"NOSUCHCOMMAND"};
    ok(wait_reply(rbus_command(&w, 1, bad, NULL, 1.0, cb, NULL)) == 0 && got && got->type == REDIS_REPLY_ERROR && goterr[0],
       "error reply reaches the callback: %s", goterr);
    const char *slow[] = {"DEBUG", "SLEEP", "0.3"};
    uint64_t t0 = mono_ms();
    ok(wait_reply(rbus_command(&w, 3, slow, NULL, 0.05, cb, NULL)) == 0 && !got && strstr(goterr, "timeout"),
       "a slow command times out at its deadline (%s)", goterr);
    /* the reply itself comes after 300 ms: the timeout error above proves the deadline fired first */
    printf("# the timeout fired after %llu ms (deadline 50 ms)\n", (unsigned long long)(mono_ms() - t0));
    for (int i = 0; i < 400; i++) ev_run(loop, EVRUN_NOWAIT), usleep(1000);   /* let the late reply drain */

    ratelimit *rl = ratelimit_new(1000, 4);
    gcra_parity(&w, rl, "p5per1s", 5, 1000, 0, 40);
    gcra_parity(&w, rl, "p7per1s-b3", 7, 1000, 3, 40);
    gcra_parity(&w, rl, "spec-api", 1000, 900000, 0, 2400);
    gcra_parity(&w, rl, "spec-monitoring", 300, 60000, 0, 800);

    /* debt beyond one bucket (a lowered limit, a clock step) is capped: exhausted, not locked out */
    const char *far[] = {"SET", "t:rl:debt", "99999999999 0"};
    wait_reply(rbus_command(&w, 3, far, NULL, 1.0, cb, NULL));
    const char *dv[] = {"t:rl:debt", "200000000", "5", "1"};
    ok(wait_reply(rbus_eval(&w, RBUS_GCRA, 1, 4, dv, NULL, 1.0, cb, NULL)) == 0 && got && got->elements == 4 &&
           got->element[0]->integer == 0 && got->element[2]->integer <= 200,
       "debt capped at B*T: retry after <= T (%lld ms)", got && got->elements == 4 ? got->element[2]->integer : -1);

    /* publish: ids never go below the caller's floor, and increase by one from there */
    const char *pub1[] = {"t:sse:id", "t:sse:s:c", "5000", "", "c", "ev", "hello", "-1", "inst", "10", "t:sse", "60000"};
    ok(wait_reply(rbus_eval(&w, RBUS_PUBLISH, 2, 12, pub1, NULL, 1.0, cb, NULL)) == 0 && got &&
           got->type == REDIS_REPLY_STRING && strcmp(got->str, "5000") == 0, "first id = floor (%s)", got ? got->str : goterr);
    const char *pub2[] = {"t:sse:id", "t:sse:s:c", "10", "", "c", "ev", "again", "-1", "inst", "10", "t:sse", "60000"};
    ok(wait_reply(rbus_eval(&w, RBUS_PUBLISH, 2, 12, pub2, NULL, 1.0, cb, NULL)) == 0 && got &&
           got->type == REDIS_REPLY_STRING && strcmp(got->str, "5001") == 0, "next id = 5001 (%s)", got ? got->str : goterr);
    const char *pub3[] = {"t:sse:id", "t:sse:s:c", "0", "4000", "c", "", "x", "-1", "inst", "10", "t:sse", "60000"};
    ok(wait_reply(rbus_eval(&w, RBUS_PUBLISH, 2, 12, pub3, NULL, 1.0, cb, NULL)) == 0 && got &&
           got->type == REDIS_REPLY_ERROR, "an explicit id below the counter is refused");
    const char *xr[] = {"XLEN", "t:sse:s:c"};
    ok(wait_reply(rbus_command(&w, 2, xr, NULL, 1.0, cb, NULL)) == 0 && got && got->integer == 2, "both kept in the stream");

    const char *in1[] = {"t:c:n", "2", "60000"};
    ok(wait_reply(rbus_eval(&w, RBUS_INCR, 1, 3, in1, NULL, 1.0, cb, NULL)) == 0 && got &&
           got->type == REDIS_REPLY_INTEGER && got->integer == 2, "INCR script");
    const char *ttl[] = {"PTTL", "t:c:n"};
    /* 60 s set a moment ago: far from "none" (-1) and from wrong units, whatever the machine's speed */
    ok(wait_reply(rbus_command(&w, 2, ttl, NULL, 1.0, cb, NULL)) == 0 && got && got->integer > 30000 && got->integer <= 60000,
       "ttl set on creation (%lld ms)", got ? got->integer : -1);

    buf m = {0};
    rbus_metrics(&srv, &m);
    ok(m.data && strstr(m.data, "sluice_redis_timeouts_total 1\n") && strstr(m.data, "sluice_redis_connected{conn=\"command\"} 1"),
       "metrics count the timeout and the live connection");
    if (m.data && !strstr(m.data, "sluice_redis_timeouts_total 1\n")) printf("# %s", m.data);
    buf_free(&m);

    /* Redis goes away: commands cannot be sent; callers fall back at once */
    kill(rp, SIGKILL);
    waitpid(rp, NULL, 0);
    for (int i = 0; i < 3000 && rbus_ready(&w); i++) ev_run(loop, EVRUN_ONCE);
    ok(!rbus_ready(&w), "loss noticed");
    ok(rbus_command(&w, 1, ping, NULL, 1.0, cb, NULL) == NULL, "no command is queued while down");

    rbus_worker_free(&w);
    rbus_server_free(&srv);
    ratelimit_free(rl);
    free_dup(copy);
    ev_loop_destroy(loop);
    return tap_done();
}
