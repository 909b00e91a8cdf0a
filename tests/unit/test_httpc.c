/* test_httpc: the outbound HTTP engine on its own loop against a tiny in-process server: results,
 * errors, the FIFO queue and its timeout, cancellation (queued, in flight, from a callback) and
 * shutdown; callbacks never run inside submit or cancel. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../core/httpc.h"
#include "../../core/httpc_int.h"
#include "tap.h"

/* ---------------------------------------------------------------- the server (threads) */

static int srv_port;
static atomic_int release_holds, closed_holds;
static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static char order[256];           /* first letter of each request's path after "/hold/" */

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    size_t len = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
            ssize_t n = recv(fd, buf + len, sizeof buf - len, 0);
            if (n <= 0) goto out;
            len += (size_t)n;
        }
        size_t used = (size_t)(end + 4 - buf);
        int hold = strncmp(buf, "GET /hold/", 10) == 0;
        if (hold) {
            pthread_mutex_lock(&order_lock);
            size_t k = strlen(order);
            if (k + 1 < sizeof order) { order[k] = buf[10]; order[k + 1] = 0; }
            pthread_mutex_unlock(&order_lock);
            while (!atomic_load(&release_holds)) {
                char b;
                ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) { atomic_fetch_add(&closed_holds, 1); goto out; }
                usleep(2000);
            }
        }
        static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Test: yes\r\n\r\nok";
        if (send(fd, resp, sizeof resp - 1, MSG_NOSIGNAL) < 0) goto out;
        memmove(buf, buf + used, len - used);
        len -= used;
    }
out:
    close(fd);
    return NULL;
}

static void *srv_main(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        pthread_t t;
        pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
    return NULL;
}

static void start_server(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 64) || getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
        perror("server");
        exit(1);
    }
    srv_port = ntohs(sa.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, srv_main, (void *)(intptr_t)lfd);
    pthread_detach(t);
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);                    /* nothing listens there now */
    return ntohs(sa.sin_port);
}

/* ---------------------------------------------------------------- the client side */

static struct ev_loop *loop;
static httpc *H;

typedef struct out {
    int done, seq;
    enum httpc_err err;
    int status;
    char body[64], errmsg[512], host[64], hdrs[256];
    httpc_req *cancel_me;         /* cancelled from this one's callback */
    httpc_req *submitted;         /* submitted from this one's callback */
    struct out *chained;
} out;
static int seq;

static void done_cb(void *ud, const httpc_result *r)
{
    out *o = ud;
    o->done = 1;
    o->seq = ++seq;
    o->err = r->err;
    o->status = r->status;
    snprintf(o->body, sizeof o->body, "%.*s", (int)r->body_len, r->body);
    snprintf(o->errmsg, sizeof o->errmsg, "%s", r->errmsg ? r->errmsg : "");
    snprintf(o->host, sizeof o->host, "%s", r->host);
    snprintf(o->hdrs, sizeof o->hdrs, "%.*s", (int)r->headers_len, r->headers);
    if (o->cancel_me) { httpc_cancel(o->cancel_me); o->cancel_me = NULL; }
    if (o->chained) {
        char url[128], err[256];
        snprintf(url, sizeof url, "http://127.0.0.1:%d/after", srv_port);
        httpc_opts opts = {.method = "GET", .url = url, .timeout = 10};
        o->submitted = httpc_submit(H, &opts, done_cb, o->chained, err, sizeof err);
    }
}

static int run_until(int (*cond)(void *), void *arg, double secs)
{
    double end = ev_time() + secs;
    while (!cond(arg) && ev_time() < end) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
    return cond(arg);
}

static int is_done(void *o) { return ((out *)o)->done; }
static int holds_arrived(void *n)
{
    pthread_mutex_lock(&order_lock);
    int k = (int)strlen(order);
    pthread_mutex_unlock(&order_lock);
    return k >= *(int *)n;
}
static int holds_closed(void *n) { return atomic_load(&closed_holds) >= *(int *)n; }

static httpc_req *get(const char *path, out *o, double queue_timeout)
{
    char url[128], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv_port, path);
    httpc_opts opts = {.method = "GET", .url = url, .timeout = 10, .queue_timeout = queue_timeout, .max_body = 1000};
    httpc_req *r = httpc_submit(H, &opts, done_cb, o, err, sizeof err);
    if (!r) printf("# submit %s: %s\n", path, err);
    return r;
}

static void reset_server(void)
{
    atomic_store(&release_holds, 0);
    atomic_store(&closed_holds, 0);
    pthread_mutex_lock(&order_lock);
    order[0] = 0;
    pthread_mutex_unlock(&order_lock);
}

/* no_proxy as curl documents it (CURLOPT_NOPROXY), used to tell a proxy's failure apart */
static void test_noproxy(void)
{
    static const struct { const char *list, *host; int want; } c[] = {
        {"*", "anything.example:80", 1},
        {"", "example.com", 0},
        {NULL, "example.com", 0},
        {"example.com", "example.com", 1},
        {"example.com", "EXAMPLE.com:8080", 1},
        {"example.com", "www.example.com", 1},
        {".example.com", "www.example.com", 1},
        {"example.com", "www.notanexample.com", 0},
        {"example.com", "example.com.othertld", 0},
        {"a.test, example.com", "example.com", 1},
        {"a.test example.com", "x.example.com:1", 1},
        {"localhost", "localhost:5000", 1},
        {"localhost", "127.0.0.1:5000", 0},
        {"127.0.0.1", "127.0.0.1:5000", 1},
        {"127.0.0.0/8", "127.1.2.3:80", 1},
        {"10.0.0.0/8", "11.0.0.1", 0},
        {"192.168.1.0/24", "192.168.1.77", 1},
        {"192.168.1.0/24", "192.168.2.1", 0},
        {"::1", "[::1]:8080", 1},
        {"[::1]", "[::1]", 1},
        {"fd00::/8", "[fd12::5]:443", 1},
        {"fd00::/8", "[fe80::1]", 0},
        {"example.com", "[::1]:80", 0},
        {"example.com.", "example.com", 1},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        ok(httpc_noproxy_match(c[i].list, c[i].host) == c[i].want, "no_proxy \"%s\" %s %s", c[i].list ? c[i].list : "(null)",
           c[i].want ? "excludes" : "does not exclude", c[i].host);
}

int main(void)
{
    test_noproxy();
    start_server();
    loop = ev_loop_new(EVFLAG_AUTO);
    httpc_limits lim = {1, 0, 8};             /* one request at a time: the rest queue */
    H = httpc_new(loop, &lim);
    ok(H != NULL, "httpc_new");

    char err[256];
    httpc_opts bad = {.method = "GET", .url = "ftp://127.0.0.1/x"};
    out o0 = {0};
    ok(!httpc_submit(H, &bad, done_cb, &o0, err, sizeof err) && strstr(err, "unsupported URL scheme"), "ftp:// refused: %s", err);
    bad.url = "http://";
    ok(!httpc_submit(H, &bad, done_cb, &o0, err, sizeof err) && strstr(err, "invalid URL"), "bad URL refused: %s", err);

    /* a plain GET */
    out a = {0};
    ok(get("/plain", &a, 5) != NULL, "submit");
    ok(!a.done, "the callback does not run inside submit");
    ok(run_until(is_done, &a, 10), "completes");
    is_int(a.err, HTTPC_OK, "no error");
    is_int(a.status, 200, "status");
    is_str(a.body, "ok", "body");
    ok(strstr(a.hdrs, "X-Test: yes\r\n") != NULL, "header lines of the response");
    char host[64];
    snprintf(host, sizeof host, "127.0.0.1:%d", srv_port);
    is_str(a.host, host, "host");

    /* refused: an error naming the host, never from inside submit */
    char url[128];
    int cp = closed_port();
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", cp);
    httpc_opts ro = {.method = "GET", .url = url, .timeout = 5};
    out rf = {0};
    ok(httpc_submit(H, &ro, done_cb, &rf, err, sizeof err) != NULL, "submit to a closed port");
    ok(!rf.done, "not completed inside submit");
    run_until(is_done, &rf, 10);
    is_int(rf.err, HTTPC_E_CONNECT, "connect error");
    snprintf(host, sizeof host, "127.0.0.1:%d: ", cp);
    ok(strncmp(rf.errmsg, host, strlen(host)) == 0, "message starts with the host: %s", rf.errmsg);

    /* FIFO behind one slot; a queue timeout; a queued cancel */
    reset_server();
    out h[4] = {{0}}, qt = {0}, qc = {0};
    get("/hold/A", &h[0], 30);
    int one = 1;
    ok(run_until(holds_arrived, &one, 10), "A holds the only slot");
    get("/hold/B", &h[1], 30);
    httpc_req *rq = get("/hold/X", &qc, 30);
    get("/hold/C", &h[2], 30);
    get("/hold/D", &h[3], 30);
    get("/hold/T", &qt, 0.05);
    int inflight, queued;
    httpc_counts(H, &inflight, &queued);
    is_int(inflight, 1, "one in flight");
    is_int(queued, 5, "five queued");
    httpc_cancel(rq);
    httpc_counts(H, &inflight, &queued);
    is_int(queued, 4, "a cancelled request leaves the queue at once");
    ok(run_until(is_done, &qt, 10), "the short queue_timeout fires");
    is_int(qt.err, HTTPC_E_QUEUE_TIMEOUT, "queue timeout");
    ok(!h[0].done && !h[1].done, "while the others still wait");
    atomic_store(&release_holds, 1);
    ok(run_until(is_done, &h[3], 10), "the queue drains");
    pthread_mutex_lock(&order_lock);
    is_str(order, "ABCD", "served in submission order, cancelled and timed-out ones never sent");
    pthread_mutex_unlock(&order_lock);
    ok(h[0].seq < h[1].seq && h[1].seq < h[2].seq && h[2].seq < h[3].seq, "completed in order");
    ok(!qc.done, "a cancelled request's callback never runs");

    /* cancel in flight: the server sees the connection close */
    lim.max_concurrent = 4;
    httpc_set_limits(H, &lim);
    reset_server();
    out f = {0};
    httpc_req *rf2 = get("/hold/F", &f, 5);
    ok(run_until(holds_arrived, &one, 10), "F in flight");
    httpc_cancel(rf2);
    ok(run_until(holds_closed, &one, 10), "the server saw the cancelled request's connection close");
    ok(!f.done, "no callback after cancel");

    /* from a callback: cancel another request in flight, submit a new one */
    reset_server();
    out g = {0}, k = {0}, after = {0};
    httpc_req *rk = get("/hold/K", &k, 5);
    run_until(holds_arrived, &one, 10);
    g.cancel_me = rk;
    g.chained = &after;
    get("/plain", &g, 5);
    ok(run_until(is_done, &after, 10), "a request submitted from a callback completes");
    ok(g.submitted != NULL, "submit from a callback works");
    is_int(after.status, 200, "its status");
    ok(!k.done, "the request cancelled from a callback never calls back");

    /* max_per_host: a second request to a host waits; another host's does not wait behind it */
    reset_server();
    lim.max_concurrent = 4;
    lim.max_per_host = 1;
    httpc_set_limits(H, &lim);
    out p1 = {0}, p2 = {0}, p3 = {0};
    get("/hold/P", &p1, 30);
    get("/hold/Q", &p2, 30);
    char lurl[128];
    snprintf(lurl, sizeof lurl, "http://localhost:%d/hold/R", srv_port);
    httpc_opts lo = {.method = "GET", .url = lurl, .timeout = 10, .queue_timeout = 30};
    ok(httpc_submit(H, &lo, done_cb, &p3, err, sizeof err) != NULL, "submit to a second host name");
    int two = 2;
    ok(run_until(holds_arrived, &two, 10), "two requests reach the server");
    pthread_mutex_lock(&order_lock);
    ok(strchr(order, 'P') && strchr(order, 'R') && !strchr(order, 'Q'), "the first of each host went out, the second of 127.0.0.1 waits: %s", order);
    pthread_mutex_unlock(&order_lock);
    httpc_counts(H, &inflight, &queued);
    ok(inflight == 2 && queued == 1, "2 in flight, 1 queued for its host");
    atomic_store(&release_holds, 1);
    ok(run_until(is_done, &p2, 10) && p2.status == 200, "the waiting one runs once its host has room");
    run_until(is_done, &p3, 10);
    lim.max_per_host = 0;

    /* shutdown: pending requests complete with "cancelled" */
    reset_server();
    out s1 = {0}, s2 = {0};
    lim.max_concurrent = 1;
    httpc_set_limits(H, &lim);
    get("/hold/S", &s1, 30);
    run_until(holds_arrived, &one, 10);
    get("/hold/U", &s2, 30);

    buf m = {0};
    httpc *arr[2] = {H, NULL};
    httpc_metrics(arr, 2, &m);
    buf_append(&m, "", 1);
    char want[128];
    snprintf(want, sizeof want, "sluice_http_client_requests_total{host=\"127.0.0.1:%d\",code=\"2xx\"}", srv_port);
    ok(strstr(m.data, want) != NULL, "metrics by host and class");
    ok(strstr(m.data, "sluice_http_client_errors_total{kind=\"connect\"} 1") != NULL, "errors by kind");
    ok(strstr(m.data, "sluice_http_client_errors_total{kind=\"queue_timeout\"} 1") != NULL, "queue timeouts counted");
    ok(strstr(m.data, "sluice_http_client_queued 1") != NULL, "queued gauge");
    buf_free(&m);

    httpc_free(H);
    ok(s1.done && s1.err == HTTPC_E_CANCELLED && s2.done && s2.err == HTTPC_E_CANCELLED, "httpc_free completes pending requests as cancelled");
    ev_loop_destroy(loop);
    atomic_store(&release_holds, 1);
    return tap_done();
}
