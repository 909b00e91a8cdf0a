/* lua_db.h: app.db for Lua (query, read, transactions) on the worker's PostgreSQL pools. */
#ifndef SLUICE_LUA_DB_H
#define SLUICE_LUA_DB_H

#include <lua.h>
#include <stddef.h>

#include "ctx.h"
#include "metrics.h"

/* Creates the worker's pools from its config (no-op without database.url); connects one in the
 * background so /ready knows early whether the database is reachable. */
int db_worker_init(worker *w);
/* After a reload: applies a changed connection_limit to the pools. */
void db_worker_configure(worker *w);
void db_worker_free(worker *w);
/* 1 when no database is configured or the primary pool can connect. */
int db_ready(worker *w);
/* The primary pools summed over the workers (read without locks, like the metrics; db_totals is
 * in metrics.h). */
void db_pool_totals(server *srv, db_totals *out);
/* Validates a DATABASE_URL; 0, or -1 with a one-line message saying what to fix. */
int db_check_url(const char *url, char *err, size_t errlen);
/* Appends pool metrics (Prometheus text) for this worker. */
void db_metrics(worker *w, buf *out, int first_worker);
/* sluice.core's `db` table: query/read/begin/commit/rollback primitives (upvalue: appstate). */
int luaopen_sluice_db(lua_State *L);

#endif
