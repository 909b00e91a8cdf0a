/* ssestream.c: the connection side of SSE: a queue of refcounted events written with writev. */
#include "ssestream.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "log.h"
#include "lua_app.h"
#include "sse.h"

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))
#define QUEUE_MAX 4096              /* events queued for one slow client before it is dropped */

typedef struct ssestream {
    sse_sub sub;
    conn *c;
    sse_event **q;
    size_t head, len, cap;
    size_t off;                     /* bytes of q[head] already written */
    uint64_t last_progress_ms;
    int dirty;
    struct ssestream *dirty_next;
} ssestream;

typedef struct sse_side {
    sse_worker *sw;
    ev_async inbox_w;
    ssestream *dirty;               /* streams with events queued during a drain */
} sse_side;

static void flush_dirty(sse_side *side)
{
    ssestream *s;
    while ((s = side->dirty)) {
        side->dirty = s->dirty_next;
        s->dirty = 0;
        if (s->c && !s->c->closed) conn_flush(s->c);
    }
}

static void inbox_cb(struct ev_loop *loop, ev_async *aw, int revents)
{
    sse_side *side = container_of(aw, sse_side, inbox_w);
    sse_worker_drain(side->sw);
    flush_dirty(side);
}

static void wake(void *ud)
{
    worker *w = ud;
    sse_side *side = w->sse;
    ev_async_send(w->loop, &side->inbox_w);
}

int ssestream_worker_init(worker *w)
{
    sse_side *side = calloc(1, sizeof *side);
    if (!side) return -1;
    w->sse = side;
    side->sw = sse_worker_new(w->srv->ssehub, (unsigned)w->idx, wake, w);
    if (!side->sw) return -1;
    ev_async_init(&side->inbox_w, inbox_cb);
    ev_async_start(w->loop, &side->inbox_w);
    return 0;
}

void ssestream_worker_free(worker *w)
{
    sse_side *side = w->sse;
    if (!side) return;
    sse_worker_free(side->sw);
    free(side);
    w->sse = NULL;
}

static void deliver(sse_sub *sub, sse_event *e, void *ud)
{
    ssestream *s = ud;
    conn *c = s->c;
    if (!c || c->closed) return;
    if (s->len == QUEUE_MAX) {          /* the client does not read: drop it rather than grow */
        log_msg(LOG_WARN, "SSE client %s too slow (%d events queued): closing", c->ip, QUEUE_MAX);
        c->state = CS_CLOSING;
        return;
    }
    if (s->len == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        sse_event **q = malloc(nc * sizeof *q);
        if (!q) return;
        for (size_t i = 0; i < s->len; i++) q[i] = s->q[(s->head + i) % s->cap];
        free(s->q);
        s->q = q;
        s->head = 0;
        s->cap = nc;
    }
    sse_event_ref(e);
    s->q[(s->head + s->len++) % s->cap] = e;
    if (!s->dirty) {
        sse_side *side = c->w->sse;
        s->dirty = 1;
        s->dirty_next = side->dirty;
        side->dirty = s;
    }
}

static void refuse(conn *c, int status, const char *msg)
{
    resp_error(c, status, msg, 0);
}

int ssestream_start(conn *c, appstate *a, lua_State *co, char *err, size_t errlen)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    err[0] = 0;
    if (!lua_istable(co, 1)) {
        snprintf(err, errlen, "SSE handler must return { channel = ..., user = ... } or { status = 4xx }");
        return -1;
    }
    lua_getfield(co, 1, "status");
    int st = lua_isnil(co, -1) ? 200 : (int)lua_tointeger(co, -1);
    lua_pop(co, 1);
    if (st != 200) {
        const char *e = app_write_result(a, c, co, err, errlen, NULL, NULL);
        if (e) { if (e != err) snprintf(err, errlen, "%s", e); return -1; }
        return 1;
    }
    const char *chans[SSE_MAX_SUB_CHANNELS];
    size_t nch = 0;
    lua_getfield(co, 1, "channel");
    if (lua_isstring(co, -1)) chans[nch++] = lua_tostring(co, -1);
    lua_getfield(co, 1, "channels");
    if (lua_istable(co, -1)) {
        size_t n = lua_objlen(co, -1);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(co, -1, (int)i);
            if (!lua_isstring(co, -1) || nch == SSE_MAX_SUB_CHANNELS) {
                snprintf(err, errlen, "SSE channels must be strings, at most %d per stream", SSE_MAX_SUB_CHANNELS);
                return -1;
            }
            chans[nch++] = lua_tostring(co, -1);   /* stays on the stack until we return */
        }
    }
    if (!nch) {
        snprintf(err, errlen, "SSE handler returned no channel (return { channel = \"name\" })");
        return -1;
    }
    lua_getfield(co, 1, "user");
    const char *user = lua_isstring(co, -1) ? lua_tostring(co, -1) : NULL;

    char lastid[64] = "";
    size_t ln;
    const char *h = http_req_header(&c->req, "last-event-id", &ln);
    if (h && ln < sizeof lastid) { memcpy(lastid, h, ln); lastid[ln] = 0; }
    else {
        const char *url = http_req_url(&c->req);
        const char *q = strstr(url, "lastEventId=");
        if (q) {
            size_t k = strcspn(q + 12, "&");
            if (k < sizeof lastid) { memcpy(lastid, q + 12, k); lastid[k] = 0; }
        }
    }

    ssestream *s = calloc(1, sizeof *s);
    if (!s) { refuse(c, 503, "out of memory"); return 1; }
    s->c = c;
    c->sse = s;
    size_t mark = c->out.len;
    worker_update_date(w);
    buf_printf(&c->out,
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               "X-Accel-Buffering: no\r\nConnection: keep-alive\r\nDate: %s\r\n\r\n: ok\n\n", w->date);
    sse_side *side = w->sse;
    int rc = sse_worker_subscribe(side->sw, &s->sub, chans, nch, user, lastid[0] ? lastid : NULL,
                                  worker_now_us(w) / 1000, deliver, s);
    if (rc != SSE_OK) {
        c->out.len = mark;
        for (size_t i = 0; i < s->len; i++) sse_event_unref(s->q[(s->head + i) % s->cap]);
        free(s->q);
        free(s);
        c->sse = NULL;
        char msg[160];
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
            refuse(c, 400, "bad channel name or Last-Event-ID");
            break;
        default:
            refuse(c, 503, sse_strerror(rc));
        }
        return 1;
    }
    c->status = 200;
    c->state = CS_SSE;
    s->last_progress_ms = worker_now_us(w) / 1000;
    conn_set_timeout(c, TMO_HEARTBEAT, cfg->sse_heartbeat);
    conn_flush(c);
    return 0;
}

int ssestream_flush(conn *c)
{
    ssestream *s = c->sse;
    if (!s || c->closed) return 0;
    while (s->len) {
        struct iovec iov[64];
        int n = 0;
        for (size_t i = 0; i < s->len && n < 64; i++) {
            size_t len;
            const char *p = sse_event_wire(s->q[(s->head + i) % s->cap], &len);
            size_t skip = i == 0 ? s->off : 0;
            iov[n].iov_base = (void *)(p + skip);
            iov[n].iov_len = len - skip;
            n++;
        }
        ssize_t wr = writev(c->fd, iov, n);
        if (wr < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
            conn_close(c);
            return 0;
        }
        s->last_progress_ms = worker_now_us(c->w) / 1000;
        size_t left = (size_t)wr;
        while (left && s->len) {
            size_t len;
            sse_event *e = s->q[s->head];
            sse_event_wire(e, &len);
            size_t rem = len - s->off;
            if (left >= rem) {
                left -= rem;
                s->off = 0;
                sse_event_unref(e);
                s->head = (s->head + 1) % s->cap;
                s->len--;
            } else {
                s->off += left;
                left = 0;
            }
        }
        if (s->len) return 1;
    }
    if (c->state == CS_CLOSING) { conn_close(c); return 0; }
    return 0;
}

void ssestream_heartbeat(conn *c)
{
    ssestream *s = c->sse;
    if (!s) { conn_close(c); return; }
    const sconfig *cfg = c->w->app_cfg;
    uint64_t now = worker_now_us(c->w) / 1000;
    if (s->len && now - s->last_progress_ms > (uint64_t)(cfg->sse_cleanup * 1000)) {
        log_msg(LOG_INFO, "SSE client %s made no progress for %.0f s: closing", c->ip, cfg->sse_cleanup);
        conn_close(c);
        return;
    }
    if (!s->len && !buf_pending(&c->out)) {
        static const char hb[] = ": hb\n\n";
        conn_send(c, hb, sizeof hb - 1);
        conn_flush(c);
        if (c->closed) return;
    }
    conn_set_timeout(c, TMO_HEARTBEAT, cfg->sse_heartbeat);
}

void ssestream_stop(conn *c)
{
    ssestream *s = c->sse;
    if (!s) return;
    sse_side *side = c->w->sse;
    sse_worker_unsubscribe(side->sw, &s->sub);
    for (size_t i = 0; i < s->len; i++) sse_event_unref(s->q[(s->head + i) % s->cap]);
    if (s->dirty) {       /* unlink from the dirty list */
        ssestream **pp = &side->dirty;
        while (*pp && *pp != s) pp = &(*pp)->dirty_next;
        if (*pp) *pp = s->dirty_next;
    }
    free(s->q);
    free(s);
    c->sse = NULL;
}
