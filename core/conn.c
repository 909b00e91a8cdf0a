/* conn.c: a client connection: accept, read, parse, write (out, then the body source), timeouts,
 * close. What a request means is the layer above's: it is handed over through c->ops. */
#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "ctx.h"
#include "log.h"
#include "sconfig.h"
#include "util.h"

#define READ_CHUNK 16384
#define FREELIST_KEEP_BUFFERS 1024  /* parked connections that keep a small request buffer */

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_tmo_cb(tw_entry *e);
static void process_input(conn *c);
static void park(conn *c);
static int body_flush(conn *c);


static void set_events(conn *c, int ev)
{
    if (c->closed) return;
    if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == ev) return;
    ev_io_stop(c->w->loop, &c->io);
    if (!ev) return;
    ev_io_set(&c->io, c->fd, ev);
    ev_io_start(c->w->loop, &c->io);
}

static void update_events(conn *c)
{
    int ev = 0;
    if (c->state == CS_READING && !c->out_paused) ev |= EV_READ;
    /* While a handler works, a read interest already registered stays: dropping it and adding
     * it back around every handler costs two epoll_ctl calls per request (libev's ADD, EEXIST,
     * MOD). conn_io_cb drops it for real if the client sends or leaves meanwhile; output
     * backpressure drops it at once (the kernel's window must stop the client). */
    else if (!c->out_paused && ev_is_active(&c->io) && (c->io.events & EV_READ)) ev |= EV_READ;
    if (c->writing) ev |= EV_WRITE;
    set_events(c, ev);
}

/* Output backpressure: a client that pipelines requests but does not read their responses
 * must not make the server buffer them without bound. Above limits.max_output_buffer unsent
 * bytes the connection stops parsing and reading (the kernel's receive window then stops the
 * client); below half of it, it goes on with what is buffered. */
static int out_full(const conn *c)
{
    size_t max = c->w->app_cfg->max_output_buffer;
    return max && buf_pending(&c->out) >= max;
}

static int out_drained(const conn *c)
{
    return buf_pending(&c->out) <= c->w->app_cfg->max_output_buffer / 2;
}

/* A client that reads slowly but steadily never lets the buffer empty, so written bytes would
 * pile up at its front: move the unsent rest down once the written part dominates. Only called
 * where no response is being assembled (its start offset would move). */
static void out_compact(conn *c)
{
    if (c->out.off >= 65536 && c->out.off >= buf_pending(&c->out)) buf_compact(&c->out);
}

void conn_set_timeout(conn *c, int kind, double seconds)
{
    c->tmo_kind = kind;
    if (kind == TMO_NONE) { tw_entry_cancel(&c->tmo); return; }
    timerwheel_add(c->w->tw, &c->tmo, worker_now_us(c->w) / 1000 + (uint64_t)(seconds * 1000));
}

/* A connection over max_connections gets this and is closed at once: cheap and clear. */
static const char busy_503[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 63\r\n"
    "Retry-After: 1\r\nConnection: close\r\n\r\n"
    "{\"error\":\"server at max_connections, retry later\",\"status\":503}";

static conn *conn_new(worker *w, int fd)
{
    conn *c = w->freelist;
    if (c) {
        w->freelist = c->next;
        w->nfree--;
        buf in = c->in, out = c->out;
        http_req req = c->req;
        uint32_t gen = c->gen;
        memset(c, 0, offsetof(conn, req));
        memset((char *)c + offsetof(conn, req) + sizeof(http_req), 0,
               sizeof(conn) - offsetof(conn, req) - sizeof(http_req));
        c->in = in, c->out = out, c->req = req, c->gen = gen;
        buf_reset(&c->in);
        buf_reset(&c->out);
    } else {
        c = calloc(1, sizeof *c);
        if (!c) return NULL;
    }
    c->w = w;
    c->fd = fd;
    c->state = CS_READING;
    c->ops = w->conn_ops;
    c->body_fd = -1;
    tw_entry_init(&c->tmo, conn_tmo_cb);
    http_parser_setup(&c->hp, &c->req, &w->app_cfg->lim);
    ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
    ev_io_start(w->loop, &c->io);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    return c;
}

void conn_accept_resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker *w = container_of(t, worker, accept_pause);
    if (!w->stopping && w->lfd >= 0) ev_io_start(loop, &w->accept_w);
}

void conn_accept_cb(struct ev_loop *loop, ev_io *aw, int revents)
{
    worker *w = container_of(aw, worker, accept_w);
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(w->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* out of descriptors: the pending connection stays in the backlog and libev
                 * would call us again at once; pause accepting briefly instead of spinning */
                double now = ev_now(loop);
                if (now - w->emfile_logged >= 1.0) {
                    log_msg(LOG_WARN, "accept: %s: pausing accepts for 100 ms (raise the open-files limit or lower limits.max_connections)",
                            strerror(errno));
                    w->emfile_logged = now;
                }
                ev_io_stop(loop, &w->accept_w);
                ev_timer_stop(loop, &w->accept_pause);
                ev_timer_set(&w->accept_pause, 0.1, 0);
                ev_timer_start(loop, &w->accept_pause);
            }
            return;
        }
        const sconfig *cfg = w->app_cfg;
        int n = atomic_fetch_add(&w->srv->nconns, 1);
        unsigned cap = cfg->max_connections;
        if (w->srv->fd_cap && w->srv->fd_cap < cap) cap = w->srv->fd_cap;
        if ((unsigned)n >= cap || w->stopping) {
            atomic_fetch_sub(&w->srv->nconns, 1);
            ssize_t wr = send(fd, busy_503, sizeof busy_503 - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)wr;
            atomic_fetch_add(&w->responses_5xx, 1);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = conn_new(w, fd);
        if (!c) { atomic_fetch_sub(&w->srv->nconns, 1); close(fd); continue; }
        c->counted = 1;
        memcpy(&c->peer, &ss, sizeof ss);
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->ip, sizeof c->ip);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->ip, sizeof c->ip);
        else
            strcpy(c->ip, "local");
        conn_set_timeout(c, TMO_HEADER, cfg->header_timeout);
    }
}

void conn_send(conn *c, const void *p, size_t n)
{
    if (c->closed) return;
    if (buf_append(&c->out, p, n)) { c->want_close = 1; return; }
}

static void body_drop(conn *c)
{
    if (c->body_fd >= 0) close(c->body_fd);
    c->body_fd = -1;
    c->body_left = 0;
}

void conn_send_file(conn *c, int fd, off_t off, off_t len)
{
    body_drop(c);
    c->body_fd = fd;
    c->body_off = off;
    c->body_left = len;
}

/* Writes what is left of the body source; 1 while some remains, 0 when done, -1 when the file
 * shrank or the peer went away. */
static int body_flush(conn *c)
{
    while (c->body_left > 0) {
        size_t chunk = c->body_left > (1 << 20) ? (1 << 20) : (size_t)c->body_left;
        ssize_t n = sendfile(c->fd, c->body_fd, &c->body_off, chunk);
        if (n > 0) {
            c->body_left -= n;
            atomic_fetch_add_explicit(&c->w->bytes_out, (unsigned long long)n, memory_order_relaxed);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;
        body_drop(c);
        return -1;
    }
    body_drop(c);
    return 0;
}

void conn_flush(conn *c)
{
    if (c->closed) return;
    while (buf_pending(&c->out)) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out),
                         MSG_NOSIGNAL | (c->body_fd >= 0 ? MSG_MORE : 0));
        if (n > 0) {
            c->out.off += (size_t)n;
            atomic_fetch_add_explicit(&c->w->bytes_out, (unsigned long long)n, memory_order_relaxed);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->writing) { c->writing = 1; update_events(c); }
            return;
        }
        conn_close(c);           /* peer went away */
        return;
    }
    buf_reset(&c->out);
    buf_shrink(&c->out, 65536);
    if (c->body_fd >= 0) {
        int r = body_flush(c);
        if (r < 0) { conn_close(c); return; }
        if (r > 0) {
            if (!c->writing) { c->writing = 1; update_events(c); }
            return;
        }
    }
    if (c->writing) { c->writing = 0; update_events(c); }
    if (c->state == CS_CLOSING) conn_close(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *iow, int revents)
{
    conn *c = container_of(iow, conn, io);
    if (revents & EV_WRITE) {
        int had_file = c->body_fd >= 0;
        size_t before = buf_pending(&c->out);
        conn_flush(c);
        if (c->closed) return;
        out_compact(c);
        if (c->out_paused) {
            /* the client reads again: the stall timeout restarts with each bit of progress */
            if (buf_pending(&c->out) < before) conn_set_timeout(c, TMO_IDLE, c->w->app_cfg->request_timeout);
            if (out_drained(c) && c->body_fd < 0) {
                c->out_paused = 0;
                conn_set_timeout(c, TMO_HEADER, c->w->app_cfg->header_timeout);
                process_input(c);
                return;
            }
        }
        if (had_file && c->body_fd < 0 && c->state == CS_READING && buf_pending(&c->in)) { process_input(c); return; }
    }
    if (!(revents & EV_READ)) return;
    if (c->out_paused || c->state != CS_READING) {
        set_events(c, c->writing ? EV_WRITE : 0);      /* the lazily kept interest: not now */
        return;
    }
    /* read what is there; stop early when a huge body streams in (limits still apply) */
    for (int rounds = 0; rounds < 4; rounds++) {
        if (buf_reserve(&c->in, READ_CHUNK)) { conn_close(c); return; }
        ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
        if (n > 0) {
            c->in.len += (size_t)n;
            if ((size_t)n < c->in.cap - c->in.len + (size_t)n) break;
            continue;
        }
        if (n == 0) { conn_close(c); return; }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        conn_close(c);
        return;
    }
    process_input(c);
}

/* Parses and handles every complete request in the input buffer, in order. */
static void process_input(conn *c)
{
    worker *w = c->w;
again:
    while (c->state == CS_READING && c->body_fd < 0 && buf_pending(&c->in) && !out_full(c)) {
        int fresh = !c->mid_request;
        if (fresh) c->hp.lim = w->app_cfg->lim;   /* the current config's limits, per request */
        size_t used = 0;
        http_feed_result r = http_feed(&c->hp, c->in.data + c->in.off, buf_pending(&c->in), &used);
        c->in.off += used;
        if (fresh && used) {           /* first bytes of a request: its clocks start now */
            c->req_start_us = worker_now_us(w);
            c->mid_request = 1;
            if (c->tmo_kind != TMO_HEADER) conn_set_timeout(c, TMO_HEADER, w->app_cfg->header_timeout);
        }
        if (r == FEED_ERROR) {
            c->ops->on_bad_request(c, c->hp.err_status, c->hp.err_msg);
            c->state = CS_CLOSING;
            break;
        }
        if (r == FEED_REQUEST) {
            c->ops->on_request(c);
            continue;
        }
        /* headers (maybe) done, body still coming */
        if (c->req.headers_done) {
            if (c->req.expect_continue && !c->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                conn_send(c, cont, sizeof cont - 1);
                c->continue_sent = 1;
            }
            if (c->tmo_kind != TMO_BODY) {
                double left = w->app_cfg->request_timeout -
                              (double)(worker_now_us(w) - c->req_start_us) / 1e6;
                conn_set_timeout(c, TMO_BODY, left > 0 ? left : 0);
            }
        }
        break;
    }
    if (!c->closed) {
        if (c->in.off == c->in.len) buf_reset(&c->in);
        else if (c->in.off > c->in.cap / 2) buf_compact(&c->in);
        conn_flush(c);
        if (c->closed) return;
        out_compact(c);
        /* a file body that went out at once frees the pipeline: go on with what is buffered */
        if (c->body_fd < 0 && c->state == CS_READING && buf_pending(&c->in) && !out_full(c)) goto again;
        if (c->state == CS_READING && out_full(c) && !c->out_paused) {
            /* the client does not read: stop reading and parsing until it does (bounded by a
             * stall timeout, refreshed whenever it takes some bytes) */
            c->out_paused = 1;
            conn_set_timeout(c, TMO_IDLE, w->app_cfg->request_timeout);
        }
        update_events(c);
    }
}

/* Called by dispatch once a request's response has been queued. */
void conn_request_done(conn *c)
{
    worker *w = c->w;
    c->continue_sent = 0;
    c->mid_request = 0;
    if (c->state == CS_SSE) return;
    if (!c->req.keepalive || c->want_close || w->stopping) {
        c->state = CS_CLOSING;
        conn_set_timeout(c, TMO_IDLE, 5);     /* bound the final flush */
        return;
    }
    c->state = CS_READING;
    conn_set_timeout(c, buf_pending(&c->in) ? TMO_HEADER : TMO_IDLE,
                     buf_pending(&c->in) ? w->app_cfg->header_timeout : w->app_cfg->keepalive_timeout);
    c->req_start_us = worker_now_us(w);
    if (c->req.body.cap > 1 << 20) buf_free(&c->req.body);
}

void conn_resume(conn *c)
{
    if (c->closed) return;
    process_input(c);
}

static void conn_tmo_cb(tw_entry *e)
{
    conn *c = container_of(e, conn, tmo);
    switch (c->tmo_kind) {
    case TMO_HEADER:
    case TMO_BODY:
        if (c->req.store.len || c->req.headers_done) {
            c->ops->on_bad_request(c, 408, "request timed out: the request was not received in time");
            c->state = CS_CLOSING;
            conn_flush(c);
            if (!c->closed) conn_set_timeout(c, TMO_IDLE, 1);
        } else {
            conn_close(c);
        }
        break;
    case TMO_HANDLER:
        if (c->ops->on_timeout) c->ops->on_timeout(c);
        else conn_close(c);
        break;
    default:
        conn_close(c);
    }
}

void conn_close(conn *c)
{
    if (c->closed) return;
    worker *w = c->w;
    c->closed = 1;
    tw_entry_cancel(&c->tmo);
    ev_io_stop(w->loop, &c->io);
    body_drop(c);
    if (c->ops->on_close) c->ops->on_close(c);
    close(c->fd);
    c->fd = -1;
    if (c->counted) atomic_fetch_sub(&w->srv->nconns, 1);
    park(c);
}

/* Off the worker's list of live connections and onto the reap list. */
static void park(conn *c)
{
    worker *w = c->w;
    if (c->prev) c->prev->next = c->next;
    else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nconns--;
    c->reap_next = w->reaplist;
    w->reaplist = c;
}

int conn_release(conn *c, int *counted)
{
    worker *w = c->w;
    int fd = c->fd;
    c->closed = 1;
    tw_entry_cancel(&c->tmo);
    ev_io_stop(w->loop, &c->io);
    body_drop(c);
    *counted = c->counted;
    c->counted = 0;
    c->fd = -1;
    park(c);
    w->nconns++;                 /* the socket still counts as this worker's until conn_socket_done */
    return fd;
}

void conn_socket_done(worker *w, int fd, int counted)
{
    close(fd);
    if (counted) atomic_fetch_sub(&w->srv->nconns, 1);
    w->nconns--;
}

void conn_reap(worker *w)
{
    conn *c;
    while ((c = w->reaplist)) {
        w->reaplist = c->reap_next;
        if (c->task) {           /* a suspended handler still points here: free when it ends */
            c->reap = 1;
            continue;
        }
        c->gen++;
        /* The struct itself is never freed while the worker lives: a request table a script
         * kept (in a global, a timer) holds a pointer to its connection and checks the
         * generation on access, which must stay readable memory. Buffers are released, so a
         * parked connection costs ~1 KB; the peak connection count bounds the total. */
        if (w->nfree < FREELIST_KEEP_BUFFERS) {
            /* what a closed connection left unsent or unparsed is garbage now: without the
             * resets, buf_shrink would keep a buffer that still "holds" bytes */
            buf_free(&c->in);
            buf_free(&c->out);
            buf_reset(&c->req.store);
            buf_shrink(&c->req.store, 8192);
            buf_reset(&c->req.body);
            buf_shrink(&c->req.body, 0);
        } else {
            buf_free(&c->in);
            buf_free(&c->out);
            http_req_free(&c->req);
        }
        c->next = w->freelist;
        w->freelist = c;
        w->nfree++;
    }
}
