/* ssestream.c: the connection side of SSE: a queue of refcounted events written with writev; with
 * Redis, caps that count every instance's streams and replay from the shared Redis streams.
 *
 * A stream starts on the request's connection (admission: the handler's answer, the caps, the
 * Redis round trip, the replay). Once admitted (ssestream_admitted) it takes the socket from the
 * connection (conn_release) and the connection is parked for the next request: an idle stream
 * keeps its own small struct (the hub subscription, the socket watcher, a timer entry, the event
 * queue), not the connection's parser, request buffers, request id or rate-limit state. */
#include "ssestream_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "log.h"
#include "rbus.h"
#include "sse.h"
#include "ssebus.h"
#include "sseenc.h"

#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "response.h"
#include "sconfig.h"
#include "util.h"

static int stream_flush(ssestream *s);
static void stream_close(ssestream *s);
static void adopt(ssestream *s);

static void flush_dirty(sse_side *side)
{
    ssestream *s;
    while ((s = side->dirty)) {
        side->dirty = s->dirty_next;
        s->dirty = 0;
        if (!s->c) stream_flush(s);    /* before adoption, adopt() writes what is queued */
    }
}

/* The client's address, for a log line (not kept per stream). */
static const char *peer_ip(const ssestream *s, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    snprintf(out, n, "?");
    if (s->c) { snprintf(out, n, "%s", s->c->ip); return out; }
    if (getpeername(s->fd, (struct sockaddr *)&ss, &sl) < 0) return out;
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)n);
    else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)n);
    else snprintf(out, n, "local");
    return out;
}

/* Closes the stream, or its connection while it has not taken the socket yet. */
static void s_close(ssestream *s)
{
    if (s->c) conn_close(s->c);
    else stream_close(s);
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

void sst_deliver(sse_sub *sub, sse_event *e, void *ud)
{
    ssestream *s = ud;
    if (s->c && s->c->closed) return;
    worker *w = s->w;
    if (s->skip_upto) {             /* already sent from the Redis stream (or gap already reported) */
        uint64_t id = sse_event_id(e);
        if (id ? id <= s->skip_upto : s->drop_gaps) return;
    }
    const sconfig *cfg = w->app_cfg;
    /* a full replay always fits: the bound is at least the retention */
    size_t bound = cfg->sse_max_queue > cfg->sse_retention + 16 ? cfg->sse_max_queue : cfg->sse_retention + 16;
    if (s->len >= bound && !s->c) {
        if (stream_flush(s) < 0) return;    /* a burst in one drain: give the socket a chance first */
    }
    if (s->len >= bound && !cfg->sse_drop_oldest) {
        /* Over the bound is not yet slow: a burst published at once (one inbox drain) outruns the
         * socket buffers of a client that reads as fast as it can. The client is slow when it stays
         * over the bound without taking any bytes for sse.slow_timeout, or when the queue reaches
         * the hard cap (4 x the bound: memory stays bounded either way). */
        uint64_t now_ms = worker_now_us(w) / 1000;
        if (!s->behind_since_ms) s->behind_since_ms = now_ms;
        uint64_t since = s->behind_since_ms > s->last_progress_ms ? s->behind_since_ms : s->last_progress_ms;
        size_t hard = bound * 4;
        if (s->len >= hard || (double)(now_ms - since) >= cfg->sse_slow_timeout * 1000) {
            char ip[64];
            log_msg(LOG_WARN, "SSE client %s too slow (%u events queued, over sse.max_queue %zu for %.1f s): closing",
                    peer_ip(s, ip, sizeof ip), s->len, bound, (double)(now_ms - s->behind_since_ms) / 1000);
            atomic_fetch_add_explicit(&w->sse_slow_closed, 1, memory_order_relaxed);
            s_close(s);
            return;
        }
    } else if (s->len >= bound) {           /* drop_oldest: the queue stays at the bound */
        /* drop the oldest whole event (never one already half on the wire) and signal it */
        uint32_t at = s->off ? 1 : 0;
        if (s->len > at) {
            sse_event_unref(s->q[(s->head + at) % s->cap]);
            for (uint32_t i = at; i + 1 < s->len; i++) s->q[(s->head + i) % s->cap] = s->q[(s->head + i + 1) % s->cap];
            s->len--;
            s->dropped++;
            atomic_fetch_add_explicit(&w->sse_dropped, 1, memory_order_relaxed);
        }
    }
    if (s->len == s->cap) {
        uint32_t nc = s->cap ? s->cap * 2 : 16;
        sse_event **q = malloc(nc * sizeof *q);
        if (!q) return;
        for (uint32_t i = 0; i < s->len; i++) q[i] = s->q[(s->head + i) % s->cap];
        free(s->q);
        s->q = q;
        s->head = 0;
        s->cap = nc;
    }
    sse_event_ref(e);
    s->q[(s->head + s->len++) % s->cap] = e;
    if (!s->dirty) {
        sse_side *side = w->sse;
        s->dirty = 1;
        s->dirty_next = side->dirty;
        side->dirty = s;
    }
}

/* Writes s->out, then the queued events, with writev. 1 while some remain (the socket is full),
 * 0 when all is written, -1 when the stream was closed (s is freed). */
static int stream_flush(ssestream *s)
{
    worker *w = s->w;
    for (;;) {
        if (s->dropped && s->off == 0) {   /* between two events: tell the client */
            buf_printf(&s->out, "event: sluice-dropped\ndata: {\"dropped\":%llu}\n\n", (unsigned long long)s->dropped);
            s->dropped = 0;
        }
        if (!s->len && !buf_pending(&s->out)) break;
        struct iovec iov[64];
        int n = 0;
        size_t outn = buf_pending(&s->out);
        if (outn) {
            iov[n].iov_base = s->out.data + s->out.off;
            iov[n].iov_len = outn;
            n++;
        }
        for (uint32_t i = 0; i < s->len && n < 64; i++) {
            size_t len;
            const char *p = sse_event_wire(s->q[(s->head + i) % s->cap], &len);
            size_t skip = i == 0 ? s->off : 0;
            iov[n].iov_base = (void *)(p + skip);
            iov[n].iov_len = len - skip;
            n++;
        }
        ssize_t wr = writev(s->fd, iov, n);
        if (wr < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!s->writing) {
                    s->writing = 1;
                    ev_io_stop(w->loop, &s->io);
                    ev_io_set(&s->io, s->fd, EV_READ | EV_WRITE);
                    ev_io_start(w->loop, &s->io);
                }
                return 1;
            }
            stream_close(s);
            return -1;
        }
        s->last_progress_ms = worker_now_us(w) / 1000;
        size_t left = (size_t)wr;
        if (outn) {
            size_t k = left < outn ? left : outn;
            /* counted as the connection counted them (events are not in bytes_out) */
            atomic_fetch_add_explicit(&w->bytes_out, (unsigned long long)k, memory_order_relaxed);
            s->out.off += k;
            left -= k;
            if (!buf_pending(&s->out)) buf_free(&s->out);   /* an idle stream keeps no buffer */
        }
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
                s->off += (uint32_t)left;
                left = 0;
            }
        }
        if (!s->len) s->behind_since_ms = 0;       /* caught up */
    }
    if (s->writing) {
        s->writing = 0;
        ev_io_stop(w->loop, &s->io);
        ev_io_set(&s->io, s->fd, EV_READ);
        ev_io_start(w->loop, &s->io);
    }
    if (s->closing) { stream_close(s); return -1; }
    return 0;
}

static void arm(ssestream *s, double seconds)
{
    timerwheel_add(s->w->tw, &s->tmo, worker_now_us(s->w) / 1000 + (uint64_t)(seconds * 1000));
}

/* Shutdown: a `retry:` hint with jitter (when nothing is half-written), then close. */
static void stream_goodbye(ssestream *s)
{
    if (!s->len && !buf_pending(&s->out)) {
        /* spread the reconnects of thousands of clients over 1-5 s */
        buf_printf(&s->out, "retry: %d\n\n", 1000 + (int)(random() % 4000));
    }
    s->closing = 1;
    arm(s, 2);                      /* bounded: a client that does not read is cut */
    stream_flush(s);
}

/* Heartbeat tick: a comment line when idle; closes streams that made no progress for
 * sse.cleanup_interval. */
static void stream_heartbeat(ssestream *s)
{
    worker *w = s->w;
    const sconfig *cfg = w->app_cfg;
    uint64_t now = worker_now_us(w) / 1000;
    if (s->len && now - s->last_progress_ms > (uint64_t)(cfg->sse_cleanup * 1000)) {
        char ip[64];
        log_msg(LOG_INFO, "SSE client %s made no progress for %.0f s: closing", peer_ip(s, ip, sizeof ip), cfg->sse_cleanup);
        stream_close(s);
        return;
    }
    if (w->rbus) sst_touch(s, 0);       /* keeps this stream counted in the shared caps */
    arm(s, cfg->sse_heartbeat);
    if (!s->len && !buf_pending(&s->out)) {
        static const char hb[] = ": hb\n\n";
        buf_append(&s->out, hb, sizeof hb - 1);
        stream_flush(s);
    }
}

static void stream_tmo_cb(tw_entry *e)
{
    ssestream *s = container_of(e, ssestream, tmo);
    if (s->closing) stream_close(s);
    else stream_heartbeat(s);
}

static void stream_io_cb(struct ev_loop *loop, ev_io *iow, int revents)
{
    ssestream *s = container_of(iow, ssestream, io);
    if (revents & EV_READ) {        /* a stream only reads to notice the client leaving */
        char sink[512];
        ssize_t n = recv(s->fd, sink, sizeof sink, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            stream_close(s);
            return;
        }
    }
    if (revents & EV_WRITE) stream_flush(s);
}

static void stream_close(ssestream *s)
{
    worker *w = s->w;
    sse_side *side = w->sse;
    ev_io_stop(w->loop, &s->io);
    tw_entry_cancel(&s->tmo);
    sse_worker_unsubscribe(side->sw, &s->sub);
    if (s->dirty) {
        ssestream **pp = &side->dirty;
        while (*pp && *pp != s) pp = &(*pp)->dirty_next;
        if (*pp) *pp = s->dirty_next;
    }
    if (s->prev) s->prev->next = s->next;
    else side->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    int fd = s->fd, counted = s->counted;
    ssestream_end_fn on_end = s->on_end;
    appstate *app = s->end_app;
    int ref = s->end_ref;
    sst_drop_stream(s);
    if (on_end && app) on_end(app, ref);
    conn_socket_done(w, fd, counted);
}

/* The admitted stream takes the socket: the connection (its parser, request, buffers, request
 * id, rate-limit state) goes back to the worker's free list. */
static void adopt(ssestream *s)
{
    conn *c = s->c;
    worker *w = c->w;
    sse_side *side = w->sse;
    s->end_app = c->sse_app;
    s->end_ref = c->sse_close_ref;
    c->sse_app = NULL;
    c->sse_close_ref = 0;
    s->out = c->out;                /* the headers (and a replay) not written yet */
    memset(&c->out, 0, sizeof c->out);
    if (!s->registered) sst_admission_free(s);   /* with Redis, member and user name it until the end */
    c->sse = NULL;
    s->c = NULL;
    http_req_free(&c->req);
    buf_free(&c->in);
    int counted;
    s->fd = conn_release(c, &counted);
    s->counted = counted != 0;
    s->next = side->streams;
    if (side->streams) side->streams->prev = s;
    side->streams = s;
    ev_io_init(&s->io, stream_io_cb, s->fd, EV_READ);
    ev_io_start(w->loop, &s->io);
    tw_entry_init(&s->tmo, stream_tmo_cb);
    arm(s, w->app_cfg->sse_heartbeat);
    stream_flush(s);
}

void ssestream_admitted(conn *c, ssestream_end_fn on_end)
{
    ssestream *s = c->sse;
    if (!s) return;
    s->on_end = on_end;
    if (c->state == CS_SSE) adopt(s);   /* (called once admitted: ssestream_start's 1, or its done) */
}

void ssestream_stop(conn *c)
{
    ssestream *s = c->sse;
    if (!s) return;
    sse_side *side = c->w->sse;
    if (!(s->a && s->a->op)) sse_worker_unsubscribe(side->sw, &s->sub);   /* not subscribed while admission is pending */
    if (s->dirty) {       /* unlink from the dirty list */
        ssestream **pp = &side->dirty;
        while (*pp && *pp != s) pp = &(*pp)->dirty_next;
        if (*pp) *pp = s->dirty_next;
    }
    sst_drop_stream(s);
}

void ssestream_worker_stop(worker *w)
{
    sse_side *side = w->sse;
    if (!side) return;
    for (ssestream *s = side->streams, *n; s; s = n) {
        n = s->next;
        if (!s->closing) stream_goodbye(s);
    }
}

void ssestream_worker_close(worker *w)
{
    sse_side *side = w->sse;
    if (!side) return;
    while (side->streams) stream_close(side->streams);
}
