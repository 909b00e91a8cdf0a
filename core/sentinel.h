/* sentinel.h: Redis Sentinel discovery for the Redis bus (layer L2: no conn, no Lua).
 *
 * A `redis-sentinel://` URL names a set of Sentinels and a master name. sentinel_start() runs one
 * thread per process that asks the Sentinels for the master (SENTINEL get-master-addr-by-name),
 * stays subscribed to `+switch-master` on one of them, and re-asks every few seconds in case a
 * message was missed. The current address is read with sentinel_master() from any thread; each
 * change bumps an epoch and calls the on_change callback (on the sentinel thread: it must only
 * post to other threads, e.g. ev_async_send).
 *
 * Ownership: the sentinel owns its thread and its copies of the settings; sentinel_stop() joins
 * the thread and frees everything. Blocking calls (hiredis' synchronous API with timeouts) happen
 * only on that thread, never on a worker's loop.
 */
#ifndef SLUICE_SENTINEL_H
#define SLUICE_SENTINEL_H

#include <stddef.h>

#define SENTINEL_MAX_ADDRS 8

typedef struct sentinel_cfg {
    struct { char host[256]; int port; } addrs[SENTINEL_MAX_ADDRS];
    int naddrs;
    char master[128];               /* the monitored master's name */
    char user[128], pass[256];      /* for the master and replicas (AUTH), from the URL's userinfo or ?password= */
    char sentinel_pass[256];        /* for the Sentinels themselves (?sentinel_password=) */
    int db;                         /* SELECT on the master (path segment after the name, or ?db=) */
} sentinel_cfg;

typedef struct sentinel sentinel;

/* Whether url is a Sentinel URL (starts with redis-sentinel://). */
int sentinel_is_url(const char *url);

/* Parses redis-sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/master-name[/db]
 * [?db=N&password=P&sentinel_password=S]; the Sentinel port defaults to 26379. 0, or -1 with a
 * reason in err. */
int sentinel_parse_url(const char *url, sentinel_cfg *out, char *err, size_t errlen);

/* Starts the discovery thread. on_change(ud) runs on that thread after each change of master
 * (also the first discovery). NULL on failure (out of memory, thread). */
sentinel *sentinel_start(const sentinel_cfg *cfg, void (*on_change)(void *ud), void *ud);

/* Copies the master's address; returns its epoch (> 0) or 0 while no Sentinel has answered yet. */
unsigned sentinel_master(sentinel *s, char *host, size_t hostlen, int *port);

/* Asks the thread to ask again now (a connection found that its node is not the master). */
void sentinel_refresh(sentinel *s);

/* Switches of master seen (for /metrics), and whether a Sentinel answered in the last check. */
unsigned long long sentinel_switches(sentinel *s);
int sentinel_reachable(sentinel *s);

/* Stops and joins the thread, frees s. NULL-safe. */
void sentinel_stop(sentinel *s);

#endif
