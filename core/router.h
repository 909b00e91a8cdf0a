/* router.h: maps (method, path) to a handler: exact paths by hash, patterns (:param, trailing *) by a segment trie. */
#ifndef SLUICE_ROUTER_H
#define SLUICE_ROUTER_H

#include <stddef.h>

typedef struct router router;

enum { RM_GET, RM_HEAD, RM_POST, RM_PUT, RM_PATCH, RM_DELETE, RM_OPTIONS, RM_ANY, RM_COUNT };

typedef struct route_target {
    int ref;          /* Lua registry ref of the handler; 0 = none */
    int kind;         /* 0 = handler, 1 = SSE authorizer, 2 = static mount */
    const void *data; /* kind 2: the mount it serves (a static_mount, owned by who added the route) */
} route_target;

typedef struct router_param {
    const char *name, *val;
    size_t nlen, vlen;
} router_param;

#define ROUTER_MAX_PARAMS 16

router *router_new(void);
void router_free(router *r);
/* Maps an http_parser method number to RM_*; -1 for methods sluice does not route. */
int router_method(int http_method);
/* Parses a method name ("GET", "post", "*"); -1 when unknown. */
int router_method_name(const char *s);
/* Adds a route; pattern segments ":name" capture one segment, a final "*" captures the rest
 * (as param "*"). Returns 0, or -1 with a message (bad pattern, duplicate route). */
int router_add(router *r, int rm, const char *pattern, route_target t, char *err, size_t errlen);
/* Finds the handler for method+path. Static segments win over :params, which win over *.
 * HEAD falls back to GET. Returns NULL when none; *allowed gets a bitmask of methods that
 * would match the path (for 405 and OPTIONS). */
const route_target *router_match(const router *r, int rm, const char *path, size_t len,
                                 router_param *params, int *nparams, unsigned *allowed);
/* The pattern a matched target was added with (owned by the router), for metrics labels. */
const char *router_pattern(const route_target *t);
/* A per-target word the caller may use to cache a label id for the target (0 until set);
 * the router is one worker's, so no locking. */
unsigned *router_label_slot(const route_target *t);

#endif
