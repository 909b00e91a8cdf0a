/* lua_app.h: one Lua state with config.lua and the handler scripts loaded, and the request coroutines run on it.
 * Layer L5 (Lua bindings): it calls services and engines below it and nothing above; the request
 * layer (dispatch) hands it requests with a completion callback. Return convention of this
 * layer's C functions: 0 / a count on success, -1 on failure (with a message where one is
 * useful); the Lua primitives follow STYLE.md (misuse raises, runtime failure returns nil, msg). */
#ifndef SLUICE_LUA_APP_H
#define SLUICE_LUA_APP_H

#include <lua.h>

#include "ctx.h"
#include "lua_guard.h"
#include "response.h"
#include "router.h"
#include "ssestream.h"
#include "timerwheel.h"

enum { TASK_REQUEST, TASK_TIMER, TASK_CHILD };
/* indexes of pre-interned response field names in appstate.keys_ref */
enum { KEY_STATUS = 4, KEY_JSON, KEY_BODY, KEY_HEADERS, KEY_COOKIES };

/* A Lua coroutine run by the worker's loop: a request handler, a timer callback, or a
 * child task awaited by another (the spec runner's tests). */
struct task {
    appstate *app;
    lua_State *co;
    int co_ref;
    int kind;
    conn *c;                 /* TASK_REQUEST: the connection, NULL once it went away */
    uint32_t gen;
    int route_kind;          /* 0 handler, 1 SSE authorizer */
    int route_ref;           /* TASK_REQUEST: registry ref of the route's handler function */
    int waiting;             /* set by a primitive that yielded and arranged a wake-up */
    tw_entry tmo;            /* app.sleep, awaits with a deadline */
    void (*cancel)(task *t); /* undo the pending wait; afterwards nothing resumes the task (request over) */
    void *wait;              /* what the primitive waits on */
    task *parent;            /* TASK_CHILD: resumed with (ok, err) when this one ends */
    int detached;            /* TASK_CHILD: nobody waits for it any more (task_detach) */
    int timer_ref;           /* TASK_TIMER: the callback; repeat interval in ms, 0 for one-shot */
    uint64_t repeat_ms, first_ms;
    void *db_op;             /* lua_db.c: the parked database operation */
    void *db_conn, *db_pool; /* lua_db.c: connection pinned by app.db.transaction */
    int db_savepoint;
    int err_status;          /* status carried by an error table ({status = 503}) */
    int stopped;             /* GUARD_* when the last run was stopped by the memory budget or deadline */
    void (*on_done)(task *t, int st, const char *etext);   /* before the task is recycled */
    void (*cleanup)(task *t); /* set by a binding holding something for the task's life (lua_db): run at release */
    double deadline;         /* child tasks: real-time limit of each run (the watchdog's deadline) */
    void *ud;
    task *next;              /* appstate's list of live tasks / freelist */
    task *prev;
};

struct appstate {
    lua_State *L;
    worker *w;               /* owning worker (NULL for `sluice check`) */
    sconfig *cfg;
    router *rt;
    int refs;                /* live tasks + 1 while current */
    int req_mt_ref;          /* metatable of request tables */
    int keys_ref;            /* interned strings: [1] method [2] path [3] params, KEY_*, [100+m] method names */
    int encode_ref;          /* cjson.encode */
    int traceback_ref;
    int *copool;             /* idle coroutines (registry refs) */
    size_t ncopool, capcopool;
    task *tasks;             /* live tasks */
    task *freetasks;
    task *running;           /* the task inside lua_resume (nested for child tasks) */
    int closing;
    int active;              /* swapped in on its worker thread */
    char *base_dir;          /* directory of config.lua */
    struct static_mount **mounts;   /* app.static's mounts, pointed at by their routes (route_target.data) */
    int nmounts;
    int pipeline_ref;        /* Lua middleware runner (app.before/after), 0 when none */
    double script_timeout;   /* seconds Lua may run without yielding; 0 = no deadline */
    lua_guard guard;         /* the state's allocator: memory budget (limits.lua_memory) and deadline */
};

/* limits.lua_memory when config.lua does not set it, and the budget config.lua itself runs under */
#define LUA_MEMORY_DEFAULT_MB 512

/* Builds a state: runs config_path, validates and normalizes it, loads the scripts.
 * w may be NULL (check/reload validation). On failure returns NULL and "file:line: message"
 * lines in err. */
/* A flag for test_mode: load config.lua only, not the handler scripts (`sluice migrate`). */
#define APPSTATE_NO_SCRIPTS 2
appstate *appstate_new(const char *config_path, worker *w, int test_mode, char *err, size_t errlen);
/* Makes the state live on its worker: arms timers the scripts created while loading. */
void appstate_activate(appstate *a);
/* Drops one reference; the state closes when the last task on it has finished. */
void appstate_release(appstate *a);
/* Cancels the state's timers (at reload: the new scripts set their own). */
void appstate_retire(appstate *a);

/* Runs the handler for a routed request. When the task ends (now, or after it resumes)
 * on_done(t, st, etext) answers it: st is lua_resume's status, etext the error with its
 * traceback, t->c the connection (NULL once it went away), t->co the returned values. The state
 * calls nothing above it: a request's completion is this callback. Returns 0, or -1 when no task
 * could be made (out of memory: nothing was run, the caller answers). */
int app_handle(appstate *a, conn *c, const route_target *t, const router_param *ps, int np,
               void (*on_done)(task *t, int st, const char *etext));
/* The request on c is over without the handler's answer (limits.request_timeout, the client
 * gone): a handler parked on a wait is abandoned there (the wait cancelled, its coroutine
 * released); one running Lua runs on, its answer dropped. */
void app_conn_gone(conn *c);
/* app.error(4xx, message, fields) raised by the finished task t: answers {"error": message,
 * "status": N, "fields": {...}} on c and returns 1; 0 when the error carries no fields table. */
int app_write_error_fields(conn *c, task *t, const char *err);
/* An app.sse handler's answer (co[1]): 0 with acc filled (its strings live on co's stack until
 * the task ends), 1 when the handler refused with its own status (that response is queued),
 * -1 when the answer is not one (message in err). */
int app_sse_result(appstate *a, conn *c, lua_State *co, ssestream_accept *acc, char *err, size_t errlen);
/* The SSE task t's stream was admitted on c: runs its answer's on_open (a task of its own) and
 * keeps its on_close on c (c->sse_app, c->sse_close_ref) for app_sse_end. */
void app_sse_opened(task *t, conn *c);
/* ssestream's on_end hook (ssestream_end_fn): the stream ended; runs the on_close (ref in a's
 * registry) and drops the reference it held on a. */
void app_sse_end(appstate *a, int ref);
/* The connection closed before its stream took the socket: the same for what c still holds. */
void app_sse_conn_gone(conn *c);
/* Writes the handler's return value (co[1]) as the response; extra() may add headers.
 * Returns NULL or an error message (constant, or written to etext). */
const char *app_write_result(appstate *a, conn *c, lua_State *co, char *etext, size_t elen,
                             void (*extra)(resp *r, void *ud), void *ud);
/* Closes and frees the state's app.static mounts (lua_core.c). */
void app_mounts_free(appstate *a);
/* "file:line" where the request task's handler function is defined ("?" when unknown). */
void app_task_where(const task *t, char *out, size_t outlen);
/* app.timer / app.sleep primitives (called by sluice.core). */
int app_timer_new(lua_State *L, appstate *a, double seconds, int fn_idx, int repeat);
int app_sleep(lua_State *L, double seconds);

/* Installs the module loaders (embedded lua/, cjson, and sluice.core when a is set). */
void app_setup_loaders(lua_State *L, appstate *a, const char *base_dir);
/* Whether name (n bytes, no ".lua") is one of the runtime's own Lua modules (lua/<name>.lua,
 * embedded in the binary). */
int app_runtime_module(const char *name, size_t n);
/* Makes a task for the function (and nargs arguments) on top of a's main stack; start it
 * with task_resume(t, nargs). Used by the spec runner. */
task *task_prepare(appstate *a, int kind, int nargs);
/* Nobody waits for the child task t any more (the spec runner's timeout): its on_done and ud are
 * dropped; parked on a wait it can undo (t->cancel set), it is abandoned now like a request
 * whose client went away (the wait cancelled, the cleanup hook gives back what it holds, its
 * coroutine dropped); parked on one it cannot, it resumes later, runs on detached and is
 * abandoned at its next such wait, or ends. Returns 1 when t was abandoned (t is gone). */
int task_detach(task *t);
/* Resumes a suspended task with nres values already pushed on t->co. */
void task_resume(task *t, int nres);
/* The task currently running on this worker (inside a Lua primitive), or NULL. */
task *task_current(appstate *a, lua_State *L);
/* Marks the running task as waiting and yields (call as `return task_yield(L, t)`). */
int task_yield(lua_State *L, task *t);

#endif
