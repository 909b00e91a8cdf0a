/* test_router: matching order and the load-time messages (each says what to write instead). */
#include <string.h>

#include "../../core/router.h"
#include "tap.h"

static route_target T(int ref) { route_target t = {ref, 0, NULL}; return t; }

static void test_match(void)
{
    router *r = router_new();
    char err[256];
    is_int(router_add(r, RM_GET, "/items", T(1), err, sizeof err), 0, "add exact");
    is_int(router_add(r, RM_GET, "/items/:id", T(2), err, sizeof err), 0, "add param");
    is_int(router_add(r, RM_POST, "/items/:id", T(3), err, sizeof err), 0, "same pattern, other method");
    is_int(router_add(r, RM_GET, "/files/*", T(4), err, sizeof err), 0, "add wildcard");
    router_param ps[ROUTER_MAX_PARAMS];
    int np = 0;
    unsigned allowed = 0;
    const route_target *t = router_match(r, RM_GET, "/items/7", 8, ps, &np, &allowed);
    ok(t && t->ref == 2 && np == 1 && ps[0].nlen == 2 && !memcmp(ps[0].name, "id", 2) && ps[0].vlen == 1, "param match");
    t = router_match(r, RM_HEAD, "/items", 6, ps, &np, &allowed);
    ok(t && t->ref == 1, "HEAD falls back to GET");
    t = router_match(r, RM_GET, "/files/a/b", 10, ps, &np, &allowed);
    ok(t && t->ref == 4, "wildcard takes the rest");
    router_free(r);
}

static void test_messages(void)
{
    router *r = router_new();
    char err[256];
    router_add(r, RM_GET, "/a", T(1), err, sizeof err);
    is_int(router_add(r, RM_GET, "/a", T(2), err, sizeof err), -1, "duplicate rejected");
    is_str(err, "duplicate route GET /a (one handler per method and path: remove one, or change its path or method)",
           "duplicate names the method");
    router_add(r, RM_ANY, "/any", T(3), err, sizeof err);
    router_add(r, RM_ANY, "/any", T(4), err, sizeof err);
    ok(strstr(err, "duplicate route * /any") == err, "'*' method named (%s)", err);
    router_add(r, RM_DELETE, "/u/:id", T(5), err, sizeof err);
    router_add(r, RM_DELETE, "/u/:id", T(6), err, sizeof err);
    ok(strstr(err, "duplicate route DELETE /u/:id") == err, "pattern duplicate (%s)", err);
    is_int(router_add(r, RM_GET, "/u/:name", T(7), err, sizeof err), -1, "a second parameter name at one position");
    is_str(err, "parameter \":name\" in \"/u/:name\" is \":id\" in another route at the same position "
                "(routes sharing a path must name a parameter alike: use \":id\")", "parameter name conflict explained");
    is_int(router_add(r, RM_GET, "/u/:id/posts", T(8), err, sizeof err), 0, "the same name below it is fine");
    is_int(router_add(r, RM_GET, "a", T(9), err, sizeof err), -1, "no leading slash");
    is_str(err, "route pattern must start with '/': \"a\" (write \"/a\")", "leading slash hint");
    router_add(r, RM_GET, "/x/:", T(10), err, sizeof err);
    is_str(err, "empty parameter name in \"/x/:\" (name it, e.g. \":id\")", "empty parameter hint");
    router_add(r, RM_GET, "/x/*/y", T(11), err, sizeof err);
    is_str(err, "'*' must be the last segment in \"/x/*/y\" (use \":name\" for one segment)", "wildcard position hint");
    router_add(r, RM_GET, "/x/a*", T(12), err, sizeof err);
    ok(strstr(err, "'*' must be a whole segment in \"/x/a*\" (e.g. \"/files/*\"") == err, "wildcard segment hint (%s)", err);
    router_free(r);
}

int main(void)
{
    test_match();
    test_messages();
    return tap_done();
}
