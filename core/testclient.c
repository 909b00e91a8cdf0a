/* testclient.c: the spec runner's HTTP and SSE client: a request from a spec travels through a
 * real loopback socket into the test instance's own listener; the waiting task yields until the
 * response (or, for subscribe(), the stream's headers and then each event) arrives. The handle
 * userdata owns its socket and buffers; its __gc closes them. */
#include "testclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "buf.h"
#include "http.h"
#include "lua_app.h"
#include "server.h"

#include "util.h"


typedef struct tclient {
    ev_io io;
    ev_timer tmo;
    int fd;
    buf out;
    http_parser p;
    task *t;                        /* waiting task, or NULL */
    int sse;                        /* subscribe(): resume at headers, keep reading events */
    int headers_done, complete, failed;
    int status;
    buf hname, body, events;
    int in_value;
    lua_State *L;                   /* state holding the header table under construction */
    int href;                       /* registry ref of the headers table */
    appstate *a;
    int closed;
    int waiting_event;
    int comments;
    int selfref;
} tclient;

static int tc_header_field(http_parser *p, const char *at, size_t n)
{
    tclient *c = p->data;
    if (c->in_value || !c->hname.len) {
        if (c->in_value) { buf_append(&c->hname, "", 1); }
        c->in_value = 0;
        buf_reset(&c->hname);
    }
    for (size_t i = 0; i < n; i++) { char ch = at[i]; if (ch >= 'A' && ch <= 'Z') ch += 32; buf_append(&c->hname, &ch, 1); }
    return 0;
}

static int tc_header_value(http_parser *p, const char *at, size_t n)
{
    tclient *c = p->data;
    lua_State *L = c->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->href);
    lua_pushlstring(L, c->hname.data, c->hname.len);
    lua_rawget(L, -2);
    if (!c->in_value) {
        if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_pushlstring(L, at, n); }
        else { lua_pushstring(L, ", "); lua_pushlstring(L, at, n); lua_concat(L, 3); }
    } else {
        lua_pushlstring(L, at, n);
        lua_concat(L, 2);
    }
    lua_pushlstring(L, c->hname.data, c->hname.len);
    lua_insert(L, -2);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    c->in_value = 1;
    return 0;
}

static void tc_finish(tclient *c);

static int tc_headers_complete(http_parser *p)
{
    tclient *c = p->data;
    c->status = p->status_code;
    c->headers_done = 1;
    return 0;
}

static int tc_body(http_parser *p, const char *at, size_t n)
{
    tclient *c = p->data;
    buf_append(c->sse && c->status == 200 ? &c->events : &c->body, at, n);
    return 0;
}

static int tc_complete(http_parser *p)
{
    tclient *c = p->data;
    c->complete = 1;
    return 0;
}

static const http_parser_settings tc_settings = {
    .on_header_field = tc_header_field,
    .on_header_value = tc_header_value,
    .on_headers_complete = tc_headers_complete,
    .on_body = tc_body,
    .on_message_complete = tc_complete,
};

/* Pushes status, headers, body (gunzipped when the server compressed it) on L. */
static int push_response(lua_State *L, tclient *c)
{
    lua_pushinteger(L, c->status);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->href);
    lua_getfield(L, -1, "content-encoding");
    int gz = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "gzip") == 0;
    lua_pop(L, 1);
    if (gz && c->body.len) {
        z_stream z = {0};
        buf out = {0};
        inflateInit2(&z, 15 + 16);
        z.next_in = (Bytef *)c->body.data;
        z.avail_in = (uInt)c->body.len;
        int rc;
        do {
            buf_reserve(&out, 65536);
            z.next_out = (Bytef *)out.data + out.len;
            z.avail_out = (uInt)(out.cap - out.len);
            rc = inflate(&z, Z_NO_FLUSH);
            out.len = out.cap - z.avail_out;
        } while (rc == Z_OK);
        inflateEnd(&z);
        lua_pushlstring(L, out.data ? out.data : "", out.len);
        buf_free(&out);
    } else {
        lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
    }
    lua_pushinteger(L, (lua_Integer)c->body.len);   /* bytes on the wire */
    return 4;
}

static void tc_close(tclient *c)
{
    if (c->closed) return;
    c->closed = 1;
    ev_io_stop(c->a->w->loop, &c->io);
    ev_timer_stop(c->a->w->loop, &c->tmo);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void tc_wake(tclient *c, int n)
{
    task *t = c->t;
    c->t = NULL;
    ev_timer_stop(c->a->w->loop, &c->tmo);
    task_resume(t, n);
}

/* t->cancel: the waiting task is abandoned (its spec timed out: task_detach), nothing resumes it.
 * A request's socket is closed (its late answer goes nowhere); a stream's handle belongs to the
 * spec (closed after the test), so next_event() only stops waiting. */
static void tc_cancel(task *t)
{
    tclient *c = t->wait;
    if (!c || c->t != t) return;
    c->t = NULL;
    ev_timer_stop(c->a->w->loop, &c->tmo);
    if (c->waiting_event) { c->waiting_event = 0; return; }
    tc_close(c);
    if (c->selfref) { luaL_unref(c->a->L, LUA_REGISTRYINDEX, c->selfref); c->selfref = 0; }
}

/* A waiting task gets its answer: response, stream handle, event, or an error. */
static void tc_finish(tclient *c)
{
    if (!c->t) return;
    lua_State *co = c->t->co;
    int selfref = c->selfref;
    c->selfref = 0;
    tc_close(c);
    if (c->failed && !c->headers_done) {
        lua_pushnil(co);
        lua_pushstring(co, "request failed: connection closed before a response");
        tc_wake(c, 2);
    } else {
        tc_wake(c, push_response(co, c));
    }
    if (selfref) luaL_unref(c->a->L, LUA_REGISTRYINDEX, selfref);
}

/* Extracts one complete event ("...\n\n") from c->events into a table on co; 0 when none. */
static int pop_event(lua_State *co, tclient *c)
{
    for (;;) {
        char *d = c->events.data + c->events.off;
        size_t n = buf_pending(&c->events);
        char *end = NULL;
        for (size_t i = 0; i + 1 < n; i++) if (d[i] == '\n' && d[i + 1] == '\n') { end = d + i; break; }
        if (!end) return 0;
        size_t blen = (size_t)(end - d);
        c->events.off += blen + 2;
        lua_newtable(co);
        int got = 0;
        buf data = {0};
        int ndata = 0;
        for (char *line = d; line < d + blen;) {
            char *nl = memchr(line, '\n', (size_t)(d + blen - line));
            size_t ll = nl ? (size_t)(nl - line) : (size_t)(d + blen - line);
            if (ll && line[0] != ':') {
                char *colon = memchr(line, ':', ll);
                size_t fl = colon ? (size_t)(colon - line) : ll;
                const char *v = colon ? colon + 1 : line + ll;
                if (colon && *v == ' ') v++;
                size_t vl = (size_t)(line + ll - v);
                if (fl == 4 && memcmp(line, "data", 4) == 0) {
                    if (ndata++) buf_append(&data, "\n", 1);
                    buf_append(&data, v, vl);
                } else if (fl == 2 && memcmp(line, "id", 2) == 0) {
                    lua_pushlstring(co, v, vl);
                    lua_setfield(co, -2, "id");
                } else if (fl == 5 && memcmp(line, "event", 5) == 0) {
                    lua_pushlstring(co, v, vl);
                    lua_setfield(co, -2, "event");
                } else if (fl == 5 && memcmp(line, "retry", 5) == 0) {
                    lua_pushlstring(co, v, vl);
                    lua_setfield(co, -2, "retry");
                }
                got = 1;
            }
            line += ll + 1;
        }
        if (ndata) {
            lua_pushlstring(co, data.data ? data.data : "", data.len);
            lua_setfield(co, -2, "data");
        }
        buf_free(&data);
        if (got) {
            if (!ndata) { lua_pushliteral(co, ""); lua_setfield(co, -2, "data"); }
            return 1;
        }
        lua_pop(co, 1);          /* comment-only block (heartbeat): skip */
        c->comments++;
    }
}

static void tc_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    tclient *c = container_of(io, tclient, io);
    if (revents & EV_WRITE) {
        while (buf_pending(&c->out)) {
            ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out), MSG_NOSIGNAL);
            if (n > 0) { c->out.off += (size_t)n; continue; }
            if (n < 0 && (errno == EAGAIN || errno == EINPROGRESS)) return;
            c->failed = 1;
            tc_close(c);
            tc_finish(c);
            return;
        }
        ev_io_stop(loop, io);
        ev_io_set(io, c->fd, EV_READ);
        ev_io_start(loop, io);
        return;
    }
    char b[65536];
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    size_t used = http_parser_execute(&c->p, &tc_settings, b, n > 0 ? (size_t)n : 0);
    if (n <= 0 || used != (size_t)n || HTTP_PARSER_ERRNO(&c->p) != HPE_OK) {
        if (!c->complete && !c->headers_done) c->failed = 1;
        tc_close(c);
    }
    if (!c->t) return;
    if (c->sse) {
        if (c->t->wait == (void *)c && c->waiting_event) {
            if (pop_event(c->t->co, c)) { c->waiting_event = 0; tc_wake(c, 1); }
            else if (c->closed) { c->waiting_event = 0; lua_pushnil(c->t->co); lua_pushstring(c->t->co, "stream closed"); tc_wake(c, 2); }
            return;
        }
        if (c->headers_done || c->closed) {
            if (c->status != 200 || c->closed) {     /* refused: wait for the whole answer */
                if (c->complete || c->closed) tc_finish(c);
                return;
            }
            lua_pushinteger(c->t->co, 200);
            lua_rawgeti(c->t->co, LUA_REGISTRYINDEX, c->selfref);
            tc_wake(c, 2);
        }
        return;
    }
    if (c->complete || c->closed) tc_finish(c);
}

static void tc_tmo_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    tclient *c = container_of(t, tclient, tmo);
    if (!c->t) return;
    if (c->waiting_event) {
        c->waiting_event = 0;
        lua_pushnil(c->t->co);
        lua_pushstring(c->t->co, "timeout");
        tc_wake(c, 2);
        return;
    }
    tc_close(c);
    lua_pushnil(c->t->co);
    lua_pushstring(c->t->co, "request timed out (no complete response within 30 s)");
    tc_wake(c, 2);
}

static int tc_gc(lua_State *L)
{
    tclient *c = luaL_checkudata(L, 1, "sluice.tclient");
    tc_close(c);
    buf_free(&c->out);
    buf_free(&c->hname);
    buf_free(&c->body);
    buf_free(&c->events);
    if (c->href) { luaL_unref(L, LUA_REGISTRYINDEX, c->href); c->href = 0; }
    return 0;
}

/* testing.raw(bytes, sse) -> status, headers, body, wire_bytes | (sse) handle-status ; nil, err */
int testclient_raw(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *bytes = luaL_checklstring(L, 1, &n);
    int sse = lua_toboolean(L, 2);
    task *t = task_current(a, L);
    if (!t) return luaL_error(L, "request(): only inside a spec (it/before_each/...)");
    tclient *c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    luaL_getmetatable(L, "sluice.tclient");
    lua_setmetatable(L, -2);
    c->a = a;
    c->L = a->L;
    lua_newtable(a->L);
    c->href = luaL_ref(a->L, LUA_REGISTRYINDEX);
    c->sse = sse;
    http_parser_init(&c->p, HTTP_RESPONSE);
    c->p.data = c;
    buf_append(&c->out, bytes, n);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a->w->test_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS) {
        lua_pushnil(L);
        lua_pushfstring(L, "connect: %s", strerror(errno));
        return 2;
    }
    ev_io_init(&c->io, tc_io_cb, c->fd, EV_WRITE);
    ev_io_start(a->w->loop, &c->io);
    ev_timer_init(&c->tmo, tc_tmo_cb, 30, 0);
    ev_timer_start(a->w->loop, &c->tmo);
    c->t = t;
    t->wait = c;
    t->cancel = tc_cancel;
    /* the userdata must survive the yield: anchor it in the task's coroutine registry slot */
    lua_pushvalue(L, -1);
    c->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
    return task_yield(L, t);
}

/* handle:next_event(timeout) -> event table | nil, "timeout" | nil, "stream closed" */
static int l_next_event(lua_State *L)
{
    tclient *c = luaL_checkudata(L, 1, "sluice.tclient");
    double timeout = luaL_optnumber(L, 2, 1);
    appstate *a = c->a;
    task *t = task_current(a, L);
    if (!t) return luaL_error(L, "next_event: only inside a spec");
    if (pop_event(L, c)) return 1;
    if (c->closed) { lua_pushnil(L); lua_pushstring(L, "stream closed"); return 2; }
    c->t = t;
    c->waiting_event = 1;
    t->wait = c;
    t->cancel = tc_cancel;
    ev_timer_stop(a->w->loop, &c->tmo);
    ev_timer_set(&c->tmo, timeout, 0);
    ev_timer_start(a->w->loop, &c->tmo);
    return task_yield(L, t);
}

static int l_sub_close(lua_State *L)
{
    tclient *c = luaL_checkudata(L, 1, "sluice.tclient");
    tc_close(c);
    if (c->selfref) { luaL_unref(L, LUA_REGISTRYINDEX, c->selfref); c->selfref = 0; }
    return 0;
}

static int l_comments(lua_State *L)
{
    tclient *c = luaL_checkudata(L, 1, "sluice.tclient");
    lua_pushinteger(L, c->comments);
    return 1;
}

/* testing.finish(handle): the request is over; drop the anchor */
static int l_release(lua_State *L)
{
    tclient *c = luaL_checkudata(L, 1, "sluice.tclient");
    if (c->selfref) { luaL_unref(L, LUA_REGISTRYINDEX, c->selfref); c->selfref = 0; }
    return 0;
}

void testclient_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"next_event", l_next_event}, {"close", l_sub_close}, {"comments", l_comments}, {"release", l_release}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, "sluice.tclient")) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, tc_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}
