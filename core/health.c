/* health.c: the readiness verdict behind /ready, sluice_ready and the status JSON; see health.h. */
#include "health.h"

#include "lua_db.h"
#include "rbus.h"

void health_check(worker *w, const sconfig *cfg, metrics_health *h)
{
    h->configured = h->up = 0;
    if (cfg->db_url && w->db) {
        h->configured |= MH_DATABASE;
        if (db_ready(w)) h->up |= MH_DATABASE;
    }
    if (w->rbus) {
        h->configured |= MH_REDIS;
        if (rbus_ready(w)) h->up |= MH_REDIS;
    }
    h->required = cfg->ready_requires >= 0 ? (unsigned)cfg->ready_requires
                                           : MH_DATABASE | (cfg->redis_fail_closed ? MH_REDIS : 0u);
    h->reason = NULL;
    if (atomic_load(&w->srv->stopping)) h->reason = "draining: shutting down";
    else if ((h->required & h->configured & MH_DATABASE) && !(h->up & MH_DATABASE)) h->reason = "database unreachable";
    else if ((h->required & h->configured & MH_REDIS) && !(h->up & MH_REDIS)) h->reason = "redis unreachable";
    h->ready = h->reason == NULL;
}
