/* ssefloor.c: the floor for bench/sse.sh, the least work an SSE fan-out can do.
 *
 * One thread, epoll. `GET /sub/...` gets a minimal event-stream answer and joins the one
 * subscriber list; `POST /pub/...` (with Content-Length) writes "data: <body>\n\n" to every
 * subscriber with one write() each in a plain loop, then answers 201. No channels, no ids,
 * no buffering: a subscriber whose socket cannot take the event at once is dropped and counted.
 *
 *   cc -O2 -o ssefloor bench/ssefloor.c && ./ssefloor PORT
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { REQ_MAX = 4096, EV_MAX = 512 };

typedef struct {
    int fd;
    int sub;            /* index in subs[], or -1 while still an HTTP request */
    size_t len;         /* bytes of the request read so far */
    char *req;          /* REQ_MAX bytes while a request is read; freed once a subscriber */
} client;

static client **by_fd;  /* fd -> client */
static int *subs, nsubs, maxfd;
static long dropped;

static void drop(client *c)
{
    if (c->sub >= 0) {          /* swap-remove keeps the list dense for the write loop */
        int last = subs[--nsubs];
        subs[c->sub] = last;
        by_fd[last]->sub = c->sub;
    }
    by_fd[c->fd] = NULL;
    close(c->fd);
    free(c->req);
    free(c);
}

static void reply(int fd, const char *s)
{
    (void)!write(fd, s, strlen(s));
}

static void publish(const char *body, size_t n)
{
    char ev[REQ_MAX + 16];
    int len = snprintf(ev, sizeof ev, "data: %.*s\n\n", (int)n, body);
    for (int i = 0; i < nsubs; i++) {
        if (write(subs[i], ev, (size_t)len) != len) {  /* full or dead: the floor does not queue */
            dropped++;
            drop(by_fd[subs[i]]);
            i--;
        }
    }
}

/* Handles as many complete requests as c->req holds; returns 0 when c was closed. */
static int on_request(client *c)
{
    for (;;) {
        c->req[c->len < REQ_MAX ? c->len : REQ_MAX - 1] = '\0';
        char *end = strstr(c->req, "\r\n\r\n");
        if (!end) {
            if (c->len >= REQ_MAX - 1) { drop(c); return 0; }
            return 1;
        }
        size_t head = (size_t)(end + 4 - c->req), body = 0;
        char *cl = strcasestr(c->req, "\r\ncontent-length:");
        if (cl && cl < end) body = strtoul(cl + 17, NULL, 10);
        if (head + body > REQ_MAX - 1) { drop(c); return 0; }
        if (c->len < head + body) return 1;
        if (strncmp(c->req, "GET /sub/", 9) == 0) {
            reply(c->fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\n\r\n");
            c->sub = nsubs;
            subs[nsubs++] = c->fd;
            free(c->req);
            c->req = NULL;
            return 1;   /* a subscriber sends nothing more that matters */
        }
        if (strncmp(c->req, "POST /pub/", 10) == 0) {
            publish(c->req + head, body);
            reply(c->fd, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
        } else {
            reply(c->fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
        memmove(c->req, c->req + head + body, c->len - head - body);
        c->len -= head + body;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    maxfd = 1 << 20;
    by_fd = calloc((size_t)maxfd, sizeof *by_fd);
    subs = calloc((size_t)maxfd, sizeof *subs);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event e = { .events = EPOLLIN, .data.fd = ls }, evs[EV_MAX];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &e);
    for (;;) {
        int n = epoll_wait(ep, evs, EV_MAX, -1);
        if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int cfd;
                while ((cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (cfd >= maxfd) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    client *c = calloc(1, sizeof *c);
                    c->fd = cfd;
                    c->sub = -1;
                    c->req = malloc(REQ_MAX);
                    by_fd[cfd] = c;
                    struct epoll_event ce = { .events = EPOLLIN, .data.fd = cfd };
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ce);
                }
                if (errno == EMFILE || errno == ENFILE) {   /* out of fds: say so, keep serving */
                    static int said;
                    if (!said++) fprintf(stderr, "ssefloor: accept: %s\n", strerror(errno));
                }
                continue;
            }
            client *c = by_fd[fd];
            if (!c) continue;
            ssize_t r;
            if (c->sub >= 0) {          /* a subscriber: only EOF or junk; drain it */
                char junk[512];
                r = read(fd, junk, sizeof junk);
                if (r == 0 || (r < 0 && errno != EAGAIN)) drop(c);
                continue;
            }
            r = read(fd, c->req + c->len, REQ_MAX - 1 - c->len);
            if (r == 0 || (r < 0 && errno != EAGAIN)) { drop(c); continue; }
            if (r > 0) { c->len += (size_t)r; on_request(c); }
        }
    }
}
