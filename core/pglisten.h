/* pglisten: one dedicated PostgreSQL connection that LISTENs on a set of channels, driven by libev;
 * reconnects with backoff and LISTENs again after a server restart. */
#ifndef SLUICE_PGLISTEN_H
#define SLUICE_PGLISTEN_H

#include <stdint.h>
#include <ev.h>

#include "pgurl.h"

#define PGLISTEN_MAX_CHANNELS 64
#define PGLISTEN_NAME_MAX 63  /* PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1) */

typedef struct pglisten pglisten; /* opaque: owned by one loop's thread */

/* Called once per NOTIFY on a channel in the set. Strings are valid during the call only. */
typedef void (*pglisten_cb)(void *ud, const char *channel, const char *payload);

typedef struct pglisten_stats_t {
    int connected;            /* 1 while connected and LISTENing */
    uint64_t notifications;   /* NOTIFYs delivered to the callback */
    uint64_t reconnects;      /* connections lost (or failed) and attempted again */
} pglisten_stats_t;

/* A listener on loop using cfg->conninfo (pool parameters are ignored) and cfg->connect_timeout.
 * Connects only once the set is non-empty. NULL on out-of-memory. */
pglisten *pglisten_new(struct ev_loop *loop, const pgpool_config *cfg, pglisten_cb cb, void *ud);

/* Closes the connection and frees l. Not from inside the callback. */
void pglisten_free(pglisten *l);

/* Replaces the channel set (names are copied; at most PGLISTEN_MAX_CHANNELS, each at most
 * PGLISTEN_NAME_MAX bytes). LISTEN/UNLISTEN for the difference are sent in the background.
 * Returns 0, or -1 when a name or the count is out of range (nothing changes). */
int pglisten_set(pglisten *l, const char *const *channels, int n);

/* Fill out with the listener's state and counters. */
void pglisten_stats(const pglisten *l, pglisten_stats_t *out);

#endif
