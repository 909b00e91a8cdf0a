/* test_sentinel: redis-sentinel:// URL parsing (the discovery thread is tested against real
 * redis-sentinel processes in tests/integration/test_redis_sentinel.py). */
#include <string.h>

#include "../../core/sentinel.h"
#include "tap.h"

int main(void)
{
    sentinel_cfg c;
    char err[256] = "";
    ok(sentinel_is_url("redis-sentinel://h/m") && !sentinel_is_url("redis://h:6379"), "is_url");
    is_int(sentinel_parse_url("redis-sentinel://10.0.0.1:26379,10.0.0.2:26380,s3/mymaster?db=2", &c, err, sizeof err),
           0, "three sentinels, db parameter");
    is_int(c.naddrs, 3, "three addresses");
    is_str(c.addrs[0].host, "10.0.0.1", "first host");
    is_int(c.addrs[1].port, 26380, "second port");
    is_int(c.addrs[2].port, 26379, "default port 26379");
    is_str(c.master, "mymaster", "master name");
    is_int(c.db, 2, "db");
    is_int(sentinel_parse_url("redis-sentinel://:s%40cret@[::1]:5000/m/3?sentinel_password=sp", &c, err, sizeof err), 0,
           "password in userinfo, ipv6, db in the path");
    is_str(c.pass, "s@cret", "password percent-decoded");
    is_str(c.user, "", "no user");
    is_str(c.addrs[0].host, "::1", "ipv6 host");
    is_int(c.addrs[0].port, 5000, "ipv6 port");
    is_int(c.db, 3, "db from the path");
    is_str(c.sentinel_pass, "sp", "sentinel_password");
    is_int(sentinel_parse_url("redis-sentinel://app:pw@h/m?password=other", &c, err, sizeof err), 0, "user and password");
    is_str(c.user, "app", "user");
    is_str(c.pass, "other", "?password= overrides the userinfo");

    struct { const char *url, *want; } bad[] = {
        {"redis://h/m", "must start with redis-sentinel://"},
        {"redis-sentinel:///m", "no Sentinel address"},
        {"redis-sentinel://h1,,h2/m", "an empty Sentinel address"},
        {"redis-sentinel://h:0/m", "bad Sentinel port"},
        {"redis-sentinel://h:99999/m", "bad Sentinel port"},
        {"redis-sentinel://h", "no master name"},
        {"redis-sentinel://h/", "no master name"},
        {"redis-sentinel://h/m?db=x", "db must be a number"},
        {"redis-sentinel://h/m?timeout=1", "unknown parameter 'timeout'"},
        {"redis-sentinel://h/m?novalue", "bad parameter"},
        {"redis-sentinel://[::1/m", "unterminated [ipv6]"},
        {"redis-sentinel://a,b,c,d,e,f,g,h,i/m", "more than 8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = sentinel_parse_url(bad[i].url, &c, err, sizeof err);
        ok(rc == -1 && strstr(err, bad[i].want), "rejects %s (%s)", bad[i].url, err);
    }
    return tap_done();
}
