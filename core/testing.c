/* testing.c: `sluice test`: one worker runs the app on an ephemeral loopback port and the spec
 * runner (lua/spec.lua) in the same Lua state, with real HTTP/SSE clients and a virtual clock. */
#include "testing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "log.h"
#include "lua_app.h"
#include "lua_db.h"
#include "metrics.h"
#include "ratelimit.h"
#include "server.h"
#include "sse.h"

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- host.run: child tasks */

typedef struct hostrun {
    ev_timer start, limit;
    task *parent, *child;
    struct ev_loop *loop;
    double timeout;
    int done, ok;
    char *msg, *trace;
} hostrun;


static void hr_resume_parent(hostrun *hr)
{
    task *p = hr->parent;
    ev_timer_stop(hr->loop, &hr->start);
    ev_timer_stop(hr->loop, &hr->limit);
    lua_State *co = p->co;
    int n;
    if (hr->ok) { lua_pushboolean(co, 1); n = 1; }
    else {
        lua_pushboolean(co, 0);
        lua_pushstring(co, hr->msg ? hr->msg : "failed");
        lua_pushstring(co, hr->trace ? hr->trace : "");
        n = 3;
    }
    free(hr->msg);
    free(hr->trace);
    free(hr);
    task_resume(p, n);
}

static void hr_start_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    hostrun *hr = container_of(t, hostrun, start);
    if (hr->done) { hr_resume_parent(hr); return; }
    task *c = hr->child;
    c->deadline = hr->timeout > 0 ? real_now() + hr->timeout : 0;
    if (hr->timeout > 0) {
        ev_timer_set(&hr->limit, hr->timeout, 0);
        ev_timer_start(loop, &hr->limit);
    }
    task_resume(c, 0);
}

static void hr_child_done(task *t, int st, const char *etext)
{
    hostrun *hr = t->ud;
    if (!hr) return;
    hr->done = 1;
    hr->ok = st == 0;
    if (!hr->ok) {
        const char *nl = strstr(etext, "\nstack traceback:");
        hr->msg = strndup(etext, nl ? (size_t)(nl - etext) : strlen(etext));
        hr->trace = strdup(etext);
    }
    /* resume the parent from the loop, not from inside the child's unwinding */
    ev_timer_stop(hr->loop, &hr->limit);
    ev_timer_set(&hr->start, 0, 0);
    ev_timer_start(hr->loop, &hr->start);
}

static void hr_limit_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    hostrun *hr = container_of(t, hostrun, limit);
    if (hr->done) return;
    hr->done = 1;
    hr->ok = 0;
    /* point at the spec line the test was waiting on: the first Lua frame of the child */
    char m[600], where[512] = "";
    lua_Debug ar;
    for (int lvl = 0; lua_getstack(hr->child->co, lvl, &ar); lvl++) {
        if (lua_getinfo(hr->child->co, "Sl", &ar) && ar.currentline > 0 && ar.source[0] == '@' &&
            !strstr(ar.source, "lua/spec")) {
            snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline);
            break;
        }
    }
    snprintf(m, sizeof m, "%stimed out after %gs", where, hr->timeout);
    hr->msg = strdup(m);
    hr->child->on_done = NULL;       /* the abandoned child may finish later: nobody listens */
    hr->child->ud = NULL;
    hr_resume_parent(hr);
}

/* host.run(fn, timeout) -> true | false, err, traceback */
static int l_run(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TFUNCTION);
    double timeout = luaL_optnumber(L, 2, 5);
    task *p = task_current(a, L);
    if (!p) return luaL_error(L, "host.run outside a task");
    hostrun *hr = calloc(1, sizeof *hr);
    hr->parent = p;
    hr->loop = a->w->loop;
    hr->timeout = timeout;
    lua_pushvalue(L, 1);
    lua_xmove(L, a->L, 1);
    task *c = task_prepare(a, TASK_CHILD, 0);
    if (!c) { free(hr); return luaL_error(L, "out of memory"); }
    hr->child = c;
    c->ud = hr;
    c->on_done = hr_child_done;
    ev_timer_init(&hr->start, hr_start_cb, 0, 0);
    ev_timer_init(&hr->limit, hr_limit_cb, timeout, 0);
    ev_timer_start(hr->loop, &hr->start);
    p->wait = hr;
    return task_yield(L, p);
}

/* ---------------------------------------------------------------- HTTP client */

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
static int l_raw(lua_State *L)
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

/* ---------------------------------------------------------------- clock */

static int l_clock_now(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushnumber(L, (double)worker_now_us(a->w) / 1e6);
    return 1;
}

static int l_clock_advance(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    double s = luaL_checknumber(L, 1);
    if (s < 0) return luaL_argerror(L, 1, "the clock only moves forward");
    a->w->vclock_offset_us += (uint64_t)(s * 1e6);
    timerwheel_run(a->w->tw, worker_now_us(a->w) / 1000);
    return 0;
}

/* testing.reset(): a fresh rate-limit table so specs do not see each other's buckets */
static int l_reset(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    server *s = a->w->srv;
    ratelimit *old = s->rl;
    s->rl = ratelimit_new(a->cfg->limiter_max_keys, 4);
    if (old) ratelimit_free(old);
    return 0;
}

static int l_real_now(lua_State *L)
{
    lua_pushnumber(L, real_now());
    return 1;
}

static int l_port(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, a->w ? a->w->test_port : 0);
    return 1;
}

int luaopen_sluice_testing(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"run", l_run},   {"raw", l_raw},           {"clock_now", l_clock_now}, {"clock_advance", l_clock_advance},
        {"reset", l_reset}, {"port", l_port},       {"real_now", l_real_now}, {NULL, NULL},
    };
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
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}

/* ---------------------------------------------------------------- sluice test */

static int exit_status = 2;
static int root_finished;

static void root_done(task *t, int st, const char *etext)
{
    root_finished = 1;
    if (st == 0) exit_status = lua_isnumber(t->co, -1) ? (int)lua_tointeger(t->co, -1) : 0;
    else { fprintf(stderr, "sluice test: %s\n", etext); exit_status = 2; }
    ev_break(t->app->w->loop, EVBREAK_ALL);
}

int testing_exec(const char *config_path, const char *module, int argc, char **argv)
{
    return testing_exec_flags(config_path, module, 0, argc, argv);
}

int testing_exec_flags(const char *config_path, const char *module, int flags, int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    char err[8192];
    server *s = calloc(1, sizeof *s);
    worker *w = calloc(1, sizeof *w);
    s->workers = w;
    s->nworkers = 1;
    s->config_path = strdup(config_path);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    w->test_mode = 1;
    appstate *a = appstate_new(config_path, w, 1 | flags, err, sizeof err);
    if (!a) { fprintf(stderr, "%s\n", err); return 2; }
    a->cfg->access_log = 0;
    s->cfg0 = a->cfg;
    log_set_level(a->cfg->log_level > LOG_WARN ? a->cfg->log_level : LOG_WARN);
    s->rl = ratelimit_new(a->cfg->limiter_max_keys, 4);
    sse_limits l = {a->cfg->sse_max, a->cfg->sse_per_user, a->cfg->sse_per_channel, a->cfg->sse_retention,
                    (uint32_t)(a->cfg->sse_retention_seconds * 1000), 0, 0};
    s->ssehub = sse_hub_new(&l, 1, 1000);
    metrics_server_init(s, a->cfg->metrics_errors, a->cfg->metrics_retention);
    if (worker_setup(s, w, 0, a)) { fprintf(stderr, "sluice test: worker setup failed\n"); return 2; }
    /* listen on an ephemeral loopback port */
    w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(w->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(w->lfd, 512) ||
        getsockname(w->lfd, (struct sockaddr *)&sa, &sl)) {
        fprintf(stderr, "sluice test: cannot listen on loopback: %s\n", strerror(errno));
        return 2;
    }
    w->test_port = ntohs(sa.sin_port);
    ev_io_init(&w->accept_w, conn_accept_cb, w->lfd, EV_READ);
    ev_io_start(w->loop, &w->accept_w);
    appstate_activate(a);

    lua_State *L = a->L;
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0)) { fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1)); return 2; }
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i + 1); }
    task *root = task_prepare(a, TASK_CHILD, 1);
    if (!root) return 2;
    root->on_done = root_done;
    task_resume(root, 1);
    if (!root_finished) ev_run(w->loop, 0);
    fflush(stdout);
    worker_teardown(w);
    sse_hub_free(s->ssehub);
    ratelimit_free(s->rl);
    metrics_server_free(s);
    return exit_status;
}

int testing_main(const char *config_path, int argc, char **argv)
{
    return testing_exec(config_path, "spec_host", argc, argv);
}

/* ---------------------------------------------------------------- sluice lua */

int testing_run_script(const char *path, int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    app_setup_loaders(L, NULL, ".");
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i); }
    lua_setglobal(L, "arg");
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_remove(L, -2);
    if (luaL_loadfile(L, path)) { fprintf(stderr, "%s\n", lua_tostring(L, -1)); lua_close(L); return 1; }
    for (int i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    int rc = lua_pcall(L, argc - 1, 0, -(argc + 1));
    if (rc) fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_close(L);
    return rc ? 1 : 0;
}
