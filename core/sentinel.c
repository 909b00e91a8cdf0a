/* sentinel.c: Redis Sentinel discovery thread (see sentinel.h). */
#include "sentinel.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define RECHECK_S 2.0               /* ask again this often even without a +switch-master */
#define CONNECT_TIMEOUT_MS 300

struct sentinel {
    sentinel_cfg cfg;
    pthread_t thread;
    pthread_mutex_t lock;           /* guards host, port, epoch */
    char host[256];
    int port;
    unsigned epoch;
    atomic_int stop, refresh, reachable;
    atomic_ullong switches;
    int first;                      /* index of the Sentinel that answered last: asked first */
    void (*on_change)(void *ud);
    void *ud;
};

int sentinel_is_url(const char *url) { return url && strncmp(url, "redis-sentinel://", 17) == 0; }

static int unhex(int c) { return c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1; }

/* Copies [p, e) percent-decoded into out; -1 when it does not fit or has a bad escape. */
static int copy_decoded(char *out, size_t cap, const char *p, const char *e)
{
    size_t n = 0;
    for (; p < e; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            if (e - p < 3 || unhex(p[1]) < 0 || unhex(p[2]) < 0) return -1;
            c = unhex(p[1]) * 16 + unhex(p[2]);
            p += 2;
        }
        if (n + 1 >= cap) return -1;
        out[n++] = (char)c;
    }
    out[n] = 0;
    return 0;
}

static int parse_db(const char *p, const char *e, int *db)
{
    if (p == e || e - p > 4) return -1;
    int v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > 1000) return -1;
    *db = v;
    return 0;
}

int sentinel_parse_url(const char *url, sentinel_cfg *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
#define FAIL(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
    if (!sentinel_is_url(url))
        FAIL("must start with redis-sentinel://");
    const char *p = url + 17;
    const char *auth_end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++) if (*q == '@') at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *ue = colon ? colon : p;          /* "pass@" alone is a password */
        if (colon && copy_decoded(out->user, sizeof out->user, p, ue) < 0) FAIL("user name too long or badly escaped");
        if (copy_decoded(out->pass, sizeof out->pass, colon ? colon + 1 : p, at) < 0)
            FAIL("password too long or badly escaped");
        p = at + 1;
    }
    /* host[:port],host[:port],... up to the path */
    while (p < auth_end) {
        const char *he = p + strcspn(p, ",/?#");
        if (he > auth_end) he = auth_end;
        if (he == p) FAIL("an empty Sentinel address in the list");
        if (out->naddrs == SENTINEL_MAX_ADDRS) FAIL("more than %d Sentinel addresses", SENTINEL_MAX_ADDRS);
        const char *hs = p, *hend, *after;
        if (*p == '[') {
            hs = p + 1;
            hend = memchr(hs, ']', (size_t)(he - hs));
            if (!hend) FAIL("unterminated [ipv6] Sentinel address");
            after = hend + 1;
        } else {
            hend = memchr(p, ':', (size_t)(he - p));
            if (!hend) hend = he;
            after = hend;
        }
        if (hend == hs || (size_t)(hend - hs) >= sizeof out->addrs[0].host) FAIL("bad Sentinel host");
        memcpy(out->addrs[out->naddrs].host, hs, (size_t)(hend - hs));
        out->addrs[out->naddrs].host[hend - hs] = 0;
        int port = 26379;
        if (after < he) {
            if (*after != ':') FAIL("bad Sentinel address");
            char *e;
            long v = strtol(after + 1, &e, 10);
            if (e != he || v <= 0 || v > 65535) FAIL("bad Sentinel port in '%.*s'", (int)(he - p), p);
            port = (int)v;
        }
        out->addrs[out->naddrs++].port = port;
        p = he;
        if (*p == ',') p++;
    }
    if (!out->naddrs) FAIL("no Sentinel address: redis-sentinel://host:26379[,host:port...]/master-name");
    if (*p != '/' || p[1] == 0 || p[1] == '?' || p[1] == '#')
        FAIL("no master name: redis-sentinel://host:26379[,host:port...]/master-name");
    p++;
    const char *ne = p + strcspn(p, "/?#");
    if ((size_t)(ne - p) >= sizeof out->master) FAIL("master name too long");
    if (copy_decoded(out->master, sizeof out->master, p, ne) < 0) FAIL("master name badly escaped");
    p = ne;
    if (*p == '/') {
        const char *de = p + 1 + strcspn(p + 1, "?#");
        if (de > p + 1 && parse_db(p + 1, de, &out->db) < 0) FAIL("bad database number after the master name");
        p = de;
    }
    if (*p == '?') {
        p++;
        while (*p && *p != '#') {
            const char *pe = p + strcspn(p, "&#");
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            if (!eq) FAIL("bad parameter '%.*s' (want name=value)", (int)(pe - p), p);
            size_t kl = (size_t)(eq - p);
            if (kl == 2 && !memcmp(p, "db", 2)) {
                if (parse_db(eq + 1, pe, &out->db) < 0) FAIL("db must be a number from 0 to 1000");
            } else if (kl == 8 && !memcmp(p, "password", 8)) {
                if (copy_decoded(out->pass, sizeof out->pass, eq + 1, pe) < 0) FAIL("password too long or badly escaped");
            } else if (kl == 17 && !memcmp(p, "sentinel_password", 17)) {
                if (copy_decoded(out->sentinel_pass, sizeof out->sentinel_pass, eq + 1, pe) < 0)
                    FAIL("sentinel_password too long or badly escaped");
            } else {
                FAIL("unknown parameter '%.*s' (known: db, password, sentinel_password)", (int)kl, p);
            }
            p = *pe == '&' ? pe + 1 : pe;
        }
    }
    return 0;
#undef FAIL
}

/* ------------------------------------------------------------------ the thread */

static redisContext *connect_to(sentinel *s, int i)
{
    struct timeval tv = { 0, CONNECT_TIMEOUT_MS * 1000 };
    redisContext *c = redisConnectWithTimeout(s->cfg.addrs[i].host, s->cfg.addrs[i].port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (s->cfg.sentinel_pass[0]) {
        redisReply *r = redisCommand(c, "AUTH %s", s->cfg.sentinel_pass);
        int ok = r && r->type != REDIS_REPLY_ERROR;
        if (r) freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

static void set_master(sentinel *s, const char *host, int port)
{
    int changed = 0;
    pthread_mutex_lock(&s->lock);
    if (port != s->port || strcmp(host, s->host) != 0) {
        int had = s->epoch > 0;
        snprintf(s->host, sizeof s->host, "%s", host);
        s->port = port;
        s->epoch++;
        changed = 1;
        if (had) atomic_fetch_add(&s->switches, 1);
    }
    pthread_mutex_unlock(&s->lock);
    if (changed) {
        log_msg(LOG_INFO, "redis sentinel: master '%s' is %s:%d", s->cfg.master, host, port);
        if (s->on_change) s->on_change(s->ud);
    }
}

/* Asks the Sentinels in turn (the last one that answered first); 0 when one answered. */
static int resolve(sentinel *s)
{
    for (int k = 0; k < s->cfg.naddrs; k++) {
        int i = (s->first + k) % s->cfg.naddrs;
        redisContext *c = connect_to(s, i);
        if (!c) continue;
        redisReply *r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->cfg.master);
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
                 r->element[1]->type == REDIS_REPLY_STRING;
        if (ok) {
            int port = atoi(r->element[1]->str);
            ok = port > 0 && port <= 65535;
            if (ok) set_master(s, r->element[0]->str, port);
        }
        if (r) freeReplyObject(r);
        redisFree(c);
        if (ok) {
            s->first = i;
            atomic_store(&s->reachable, 1);
            return 0;
        }
    }
    atomic_store(&s->reachable, 0);
    return -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A "+switch-master" message: "<name> <old-ip> <old-port> <new-ip> <new-port>". */
static void on_message(sentinel *s, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[2]->type != REDIS_REPLY_STRING) return;
    char name[128], oh[256], nh[256];
    int op, np;
    if (sscanf(r->element[2]->str, "%127s %255s %d %255s %d", name, oh, &op, nh, &np) != 5) return;
    if (strcmp(name, s->cfg.master) != 0 || np <= 0 || np > 65535) return;
    set_master(s, nh, np);
}

static void *thread_main(void *arg)
{
    sentinel *s = arg;
    while (!atomic_load(&s->stop)) {
        resolve(s);
        /* stay subscribed to the Sentinel that answered; ask again every RECHECK_S */
        redisContext *c = connect_to(s, s->first);
        redisReply *r = c ? redisCommand(c, "SUBSCRIBE +switch-master") : NULL;
        int ok = r && r->type == REDIS_REPLY_ARRAY;
        if (r) freeReplyObject(r);
        double next = now_s() + RECHECK_S;
        while (ok && !atomic_load(&s->stop) && !atomic_exchange(&s->refresh, 0) && now_s() < next) {
            void *rep = NULL;
            if (redisGetReplyFromReader(c, &rep) != REDIS_OK) { ok = 0; break; }
            if (rep) {
                on_message(s, rep);
                freeReplyObject(rep);
                continue;
            }
            struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
            int n = poll(&pfd, 1, 100);
            if (n < 0 && errno != EINTR) { ok = 0; break; }
            if (n > 0 && redisBufferRead(c) != REDIS_OK) { ok = 0; break; }
        }
        if (c) redisFree(c);
        if (!ok && !atomic_load(&s->stop)) {
            struct timespec ts = { 0, 100 * 1000 * 1000 };   /* no Sentinel: try again shortly */
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

sentinel *sentinel_start(const sentinel_cfg *cfg, void (*on_change)(void *ud), void *ud)
{
    sentinel *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cfg = *cfg;
    s->on_change = on_change;
    s->ud = ud;
    pthread_mutex_init(&s->lock, NULL);
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    return s;
}

unsigned sentinel_master(sentinel *s, char *host, size_t hostlen, int *port)
{
    pthread_mutex_lock(&s->lock);
    unsigned e = s->epoch;
    snprintf(host, hostlen, "%s", s->host);
    *port = s->port;
    pthread_mutex_unlock(&s->lock);
    return e;
}

void sentinel_refresh(sentinel *s) { atomic_store(&s->refresh, 1); }
unsigned long long sentinel_switches(sentinel *s) { return atomic_load(&s->switches); }
int sentinel_reachable(sentinel *s) { return atomic_load(&s->reachable); }

void sentinel_stop(sentinel *s)
{
    if (!s) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
