/* ssestream_admit.c: admitting an SSE stream (ssestream_start): the handler's channels and
 * user, the local caps through the hub's subscribe, with Redis the caps that count every
 * instance's streams and the replay from the shared Redis streams, and refusals with a clear
 * reason. The stream itself (queue, writev, heartbeats) is ssestream.c; types in
 * ssestream_int.h. */
#include "ssestream_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ssebus.h"
#include "sseenc.h"

#include "clock.h"
#include "ctx.h"
#include "response.h"
#include "sconfig.h"
#include "util.h"

static void refuse(conn *c, int status, const char *msg)
{
    resp_error(c, status, msg, 0);
}

/* Which argument sse_worker_subscribe refused (SSE_ERR_ARG) and why, for the 400 (and the log:
 * a bad channel name is the authorizer's mistake, not the client's). */
static void arg_reason(char *msg, size_t n, const admission *s, const char *lastid)
{
    uint64_t id;
    if (lastid && lastid[0] && sseenc_parse_id(lastid, &id)) {
        snprintf(msg, n, "Last-Event-ID is not an event id: ids are decimal numbers such as 17331234567890 "
                         "(send back the id of the last event received, or no Last-Event-ID)");
        return;
    }
    for (size_t i = 0; i < s->nch; i++) {
        const char *ch = s->chans[i];
        size_t l = strlen(ch);
        for (size_t k = 0; k < l && l <= SSE_MAX_CHANNEL_LEN; k++)
            if ((unsigned char)ch[k] < 0x20 || ch[k] == 0x7f) l = SSE_MAX_CHANNEL_LEN + 1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ch, s->chans[j])) {
                snprintf(msg, n, "the SSE handler returned channel \"%.60s\" twice (list each channel once)", ch);
                log_msg(LOG_WARN, "SSE %s", msg);
                return;
            }
        if (l == 0 || l > SSE_MAX_CHANNEL_LEN) {
            snprintf(msg, n, "the SSE handler returned a bad channel name (channels are 1 to %d bytes without control characters)",
                     SSE_MAX_CHANNEL_LEN);
            log_msg(LOG_WARN, "SSE %s", msg);
            return;
        }
    }
    snprintf(msg, n, "bad SSE subscription");
}

/* ---------------------------------------------------------------- Redis: caps and replay */

static double member_ttl(const sconfig *cfg) { return cfg->sse_heartbeat * 3 + 10; }

static size_t user_key(const server *srv, const admission *s, char *out, size_t cap)
{
    int n = s->user ? snprintf(out, cap, "%ssse:u:%s", rbus_prefix(srv), s->user)
                    : snprintf(out, cap, "%ssse:conns", rbus_prefix(srv));
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Refreshes (remove = 0) or removes this stream's entries in the shared sets; fire and forget. */
void sst_touch(ssestream *s, int remove)
{
    worker *w = s->w;
    admission *a = s->a;
    if (!w->rbus || !a || !a->member[0]) return;
    char total[96], ukey[400], ttl[24];
    snprintf(total, sizeof total, "%ssse:conns", rbus_prefix(w->srv));
    user_key(w->srv, a, ukey, sizeof ukey);
    snprintf(ttl, sizeof ttl, "%.0f", member_ttl(w->app_cfg) * 1000);
    const char *av[] = {total, ukey, a->member, ttl, remove ? "1" : "0", a->user ? "1" : "0"};
    rbus_eval(w, RBUS_SSE_TOUCH, 2, 6, av, NULL, 1.0, NULL, NULL);
}

void sst_admission_free(ssestream *s)
{
    if (!s->a) return;
    if (s->a->op) rbus_cancel(s->a->op);
    free(s->a->adm);
    free(s->a);
    s->a = NULL;
}

/* Releases the stream (queued events, Redis entries, the pending admission). */
void sst_drop_stream(ssestream *s)
{
    if (s->a && s->a->op) { rbus_cancel(s->a->op); s->a->op = NULL; }
    if (s->registered) sst_touch(s, 1);
    for (uint32_t i = 0; i < s->len; i++) sse_event_unref(s->q[(s->head + i) % s->cap]);
    free(s->q);
    sst_admission_free(s);
    buf_free(&s->out);
    if (s->c) s->c->sse = NULL;
    free(s);
}

static void put_event(buf *b, uint64_t id, const char *ev, size_t evl, const char *retry, const char *d, size_t dl)
{
    buf_printf(b, "id: %llu\n", (unsigned long long)id);
    if (evl) { buf_puts(b, "event: "); buf_append(b, ev, evl); buf_puts(b, "\n"); }
    if (retry && *retry && *retry != '-') buf_printf(b, "retry: %s\n", retry);
    size_t start = 0;
    for (size_t i = 0;;) {            /* CR, LF and CRLF each end a data line, as the hub encodes */
        if (i == dl || d[i] == '\r' || d[i] == '\n') {
            buf_puts(b, "data: ");
            buf_append(b, d + start, i - start);
            buf_puts(b, "\n");
            if (i == dl) break;
            i += (d[i] == '\r' && i + 1 < dl && d[i + 1] == '\n') ? 2 : 1;
            start = i;
        } else {
            i++;
        }
    }
    buf_puts(b, "\n");
}

typedef struct rent {
    uint64_t id;
    const redisReply *fields;
} rent;

static int rent_cmp(const void *a, const void *b)
{
    uint64_t x = ((const rent *)a)->id, y = ((const rent *)b)->id;
    return x < y ? -1 : x > y;
}

static const char *field(const redisReply *f, const char *name, size_t *len)
{
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && strcmp(f->element[i]->str, name) == 0 &&
            f->element[i + 1]->type == REDIS_REPLY_STRING) {
            *len = f->element[i + 1]->len;
            return f->element[i + 1]->str;
        }
    *len = 0;
    return "";
}

/* Writes what the client missed from the Redis streams (gap notices first, then the events in id
 * order); returns the highest id it covers (at least the client's Last-Event-ID). */
static uint64_t replay(conn *c, const admission *s, const redisReply *r, uint64_t last)
{
    size_t total = 0;
    for (size_t i = 0; i < s->nch; i++) {
        const redisReply *g = r->element[1 + 2 * i], *l = r->element[2 + 2 * i];
        if (g->type != REDIS_REPLY_INTEGER || l->type != REDIS_REPLY_ARRAY) return last;
        total += l->elements;
    }
    rent *ents = total ? malloc(total * sizeof *ents) : NULL;
    if (total && !ents) return last;
    size_t n = 0;
    for (size_t i = 0; i < s->nch; i++) {
        const redisReply *g = r->element[1 + 2 * i], *l = r->element[2 + 2 * i];
        uint64_t oldest = 0;
        for (size_t k = 0; k < l->elements; k++) {
            const redisReply *e = l->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
                e->element[1]->type != REDIS_REPLY_ARRAY) continue;
            ents[n].id = strtoull(e->element[0]->str, NULL, 10);
            ents[n].fields = e->element[1];
            if (!oldest) oldest = ents[n].id;
            n++;
        }
        if (g->integer) {
            buf_printf(&c->out, "event: " SSE_GAP_EVENT "\ndata: {\"channel\":\"");
            for (const char *p = s->chans[i]; *p; p++) {
                if (*p == '"' || *p == '\\') buf_append(&c->out, "\\", 1);
                buf_append(&c->out, p, 1);
            }
            buf_printf(&c->out, "\",\"last_event_id\":%llu,\"oldest\":%llu}\n\n", (unsigned long long)last,
                       (unsigned long long)oldest);
        }
    }
    qsort(ents, n, sizeof *ents, rent_cmp);
    uint64_t upto = last;
    for (size_t k = 0; k < n; k++) {
        size_t el, dl, rl;
        const char *ev = field(ents[k].fields, "e", &el), *d = field(ents[k].fields, "d", &dl);
        const char *rt = field(ents[k].fields, "r", &rl);
        put_event(&c->out, ents[k].id, ev, el, rl ? rt : NULL, d, dl);
        if (ents[k].id > upto) upto = ents[k].id;
    }
    free(ents);
    rbus_count(c->w->srv, RBC_SSE_REPLAYED);
    return upto;
}

static void write_headers(conn *c)
{
    worker_update_date(c->w);
    buf_printf(&c->out,
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               "X-Accel-Buffering: no\r\nConnection: keep-alive\r\nDate: %s\r\n\r\n: ok\n\n", c->w->date);
}

/* Subscribes s in the local hub (headers already at mark in c->out). 0: c is a stream; 1: refused
 * (the refusal is queued, s is freed). */
static int subscribe_local(conn *c, ssestream *s, size_t mark, const char *lastid)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    sse_side *side = w->sse;
    admission *a = s->a;
    int rc = sse_worker_subscribe(side->sw, &s->sub, a->chans, a->nch, a->user, lastid && lastid[0] ? lastid : NULL,
                                  worker_now_us(w) / 1000, sst_deliver, s);
    if (rc != SSE_OK) {
        char msg[256];
        if (rc == SSE_ERR_ARG) arg_reason(msg, sizeof msg, a, lastid); /* before s is freed */
        c->out.len = mark;
        sst_drop_stream(s);
        switch (rc) {
        case SSE_ERR_USER:
            snprintf(msg, sizeof msg, "too many event streams for this user (sse.per_user = %u)", cfg->sse_per_user);
            refuse(c, 429, msg);
            break;
        case SSE_ERR_TOTAL:
            refuse(c, 503, "server at sse.max_connections, retry later");
            break;
        case SSE_ERR_CHANNEL:
            refuse(c, 503, "channel subscriber limit reached");
            break;
        case SSE_ERR_ARG:
            refuse(c, 400, msg);
            break;
        default:
            refuse(c, 503, sse_strerror(rc));
        }
        return 1;
    }
    c->status = 200;
    c->state = CS_SSE;              /* admitted: ssestream_admitted hands the socket to the stream */
    s->last_progress_ms = worker_now_us(w) / 1000;
    return 0;
}

static void admit_cb(void *ud, const redisReply *r, const char *err)
{
    ssestream *s = ud;
    conn *c = s->c;
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    admission *a = s->a;
    void (*done)(conn *c) = a->done;   /* a may go before it runs */
    a->op = NULL;
    long long verdict = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER)
        verdict = r->element[0]->integer;
    if (verdict == 1 || verdict == 2) {
        sst_drop_stream(s);
        if (verdict == 2) {
            char msg[160];
            snprintf(msg, sizeof msg, "too many event streams for this user (sse.per_user = %u, all instances)",
                     cfg->sse_per_user);
            refuse(c, 429, msg);
        } else {
            refuse(c, 503, "cluster at sse.max_connections, retry later");
        }
        done(c);
        return;
    }
    s->registered = 1;                  /* on a timeout the script may have run: remove at close */
    if (verdict == 0) {
        rbus_count(w->srv, RBC_SSE_ADMIT);
    } else {
        rbus_count(w->srv, RBC_SSE_ADMIT_FALLBACK);   /* Redis failed: local caps only */
    }
    size_t mark = c->out.len;
    write_headers(c);
    char lid[24];
    const char *lastid = a->lastid[0] ? a->lastid : NULL;
    const redisReply *ep = r && r->elements == 2 + 2 * a->nch ? r->element[1 + 2 * a->nch] : NULL;
    /* Redis's streams replay only when they are the history this instance knows; after Redis
     * lost its data they would look complete while they are not: then the hub alone replays
     * (it has what this instance received and marks what it missed) */
    if (verdict == 0 && lastid && ep && ep->type == REDIS_REPLY_STRING &&
        ssebus_redis_replay_ok(w->srv, ep->str, strtoull(lastid, NULL, 10))) {
        uint64_t upto = replay(c, a, r, strtoull(lastid, NULL, 10));
        snprintf(lid, sizeof lid, "%llu", (unsigned long long)upto);
        lastid = lid;
        s->skip_upto = upto;
        s->drop_gaps = 1;
    }
    if (subscribe_local(c, s, mark, lastid) == 0)
        s->drop_gaps = 0;               /* the hub's replay gaps were superseded by Redis's: a gap from now on is news */
    done(c);                            /* a stream (CS_SSE: the caller logs it, then ssestream_admitted) or a refusal */
}

/* Copies what the asynchronous admission needs (the Lua strings die when the handler returns)
 * and names the stream in the shared sets. -1 when it cannot (the local path decides). */
static int admit_prepare(conn *c, admission *s, const char *const *chans, size_t nch, const char *user,
                         const char *lastid)
{
    worker *w = c->w;
    size_t need = 0, ul = user ? strlen(user) : 0;
    if (lastid) {
        size_t k = 0;                   /* only a plain decimal goes to Redis; the hub rejects the rest */
        while (lastid[k] >= '0' && lastid[k] <= '9') k++;
        if (!k || k >= 20 || lastid[k]) return -1;
        memcpy(s->lastid, lastid, k + 1);
    }
    for (size_t i = 0; i < nch; i++) need += strlen(chans[i]) + 1;
    if (ul > 200 || !(s->adm = malloc(need + ul + 1))) return -1;
    char *p = s->adm;
    for (size_t i = 0; i < nch; i++) {
        size_t l = strlen(chans[i]) + 1;
        memcpy(p, chans[i], l);
        s->chans[i] = p;
        p += l;
    }
    s->nch = nch;
    if (user) { memcpy(p, user, ul + 1); s->user = p; }
    snprintf(s->member, sizeof s->member, "%s:%d:%p:%u", rbus_instance(w->srv), w->idx, (void *)c, c->gen);
    return 0;
}

/* Asks Redis for the cross-instance caps (and the missed events when the client sent a
 * Last-Event-ID). Returns 1 when the admission is in flight. */
static int admit_send(conn *c, ssestream *st)
{
    admission *s = st->a;
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    const char *prefix = rbus_prefix(w->srv);
    char total[96], ukey[400], ttl[24], maxt[16], peru[16], rmax[16], epoch[96];
    snprintf(epoch, sizeof epoch, "%ssse:epoch", prefix);
    char streams[SSE_MAX_SUB_CHANNELS][320];
    const char *av[10 + SSE_MAX_SUB_CHANNELS];
    int nk = 2, na = 0;
    snprintf(total, sizeof total, "%ssse:conns", prefix);
    user_key(w->srv, s, ukey, sizeof ukey);
    av[na++] = total;
    av[na++] = ukey;
    if (s->lastid[0])
        for (size_t i = 0; i < s->nch; i++) {
            snprintf(streams[i], sizeof streams[i], "%ssse:s:%s", prefix, s->chans[i]);
            av[na++] = streams[i];
            nk++;
        }
    snprintf(ttl, sizeof ttl, "%.0f", member_ttl(cfg) * 1000);
    snprintf(maxt, sizeof maxt, "%u", cfg->sse_max);
    snprintf(peru, sizeof peru, "%u", cfg->sse_per_user);
    snprintf(rmax, sizeof rmax, "%u", cfg->sse_retention ? cfg->sse_retention : 1);
    av[na++] = s->member;
    av[na++] = ttl;
    av[na++] = maxt;
    av[na++] = peru;
    av[na++] = s->user ? "1" : "0";
    av[na++] = s->lastid;
    av[na++] = rmax;
    av[na++] = epoch;
    s->op = rbus_eval(w, RBUS_SSE_ADMIT, nk, na, av, NULL, ADMIT_DEADLINE, admit_cb, st);
    return s->op != NULL;
}

int ssestream_start(conn *c, const ssestream_accept *acc, void (*done)(conn *c))
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    const char *const *chans = acc->chans;
    size_t nch = acc->nch;
    const char *user = acc->user;

    char lastid[64] = "";
    size_t ln;
    const char *h = http_req_header(&c->req, "last-event-id", &ln);
    int bad_id = 0;        /* ids are decimal numbers: anything this long is not one */
    if (h) {
        if (ln < sizeof lastid) { memcpy(lastid, h, ln); lastid[ln] = 0; }
        else bad_id = 1;
    } else {
        const char *url = http_req_url(&c->req);
        const char *q = strstr(url, "lastEventId=");
        if (q) {
            size_t k = strcspn(q + 12, "&");
            if (k < sizeof lastid) { memcpy(lastid, q + 12, k); lastid[k] = 0; }
            else bad_id = 1;
        }
    }
    if (bad_id) { refuse(c, 400, "Last-Event-ID is not an event id: ids are decimal numbers such as 17331234567890 (this one is over 63 bytes)"); return -1; }

    ssestream *s = calloc(1, sizeof *s);
    admission *ad = s ? calloc(1, sizeof *ad) : NULL;
    if (!ad) { free(s); refuse(c, 503, "out of memory"); return -1; }
    s->c = c;
    s->w = w;
    s->a = ad;
    s->fd = -1;
    c->sse = s;
    if (w->rbus && admit_prepare(c, ad, chans, nch, user, lastid[0] ? lastid : NULL) == 0) {
        /* Several instances: the caps count every instance's streams, and a reconnecting client
         * gets what it missed from Redis. The connection waits (CS_HANDLING) for the answer. */
        ad->done = done;
        if (rbus_ready(w) && admit_send(c, s)) {
            c->status = 200;
            c->state = CS_HANDLING;
            conn_set_timeout(c, TMO_HANDLER, cfg->request_timeout);
            return 2;
        }
        /* Redis is down: local caps decide; the heartbeat registers the stream once it is back */
        rbus_count(w->srv, RBC_SSE_ADMIT_FALLBACK);
        s->registered = 1;
        size_t mark = c->out.len;
        write_headers(c);
        return subscribe_local(c, s, mark, ad->lastid) ? -1 : 1;
    }
    free(ad->adm);
    ad->adm = NULL;
    ad->nch = nch;
    for (size_t i = 0; i < nch; i++) ad->chans[i] = chans[i];   /* the caller's strings, alive until we return */
    ad->user = user;
    size_t mark = c->out.len;
    write_headers(c);
    int rc = subscribe_local(c, s, mark, lastid);
    if (rc == 0) { ad->user = NULL; ad->nch = 0; }              /* they pointed at the caller's strings */
    return rc ? -1 : 1;
}

