"""corpus.py: the adversarial suite's cases, written from RFC 9112's MUST / MUST NOT statements
and the known request-smuggling classes (CL.TE, TE.CL, TE.TE obfuscations, chunk-size and
chunk-extension tricks, obs-fold, bare CR / LF, NUL, Content-Length forms, Host, targets).

A case is the bytes a client sends plus what sluice must answer when they reach it directly:
the exact status of every response, in order, and whether the connection must then be closed.
`{ID}` in the bytes becomes the case's tag for one mode (d001 direct, n001 nginx, h001 HAProxy:
as long as `{ID}`, so lengths computed before the substitution stay right); every request of a
case carries it as `case=`, so the handler log tells the cases and modes apart. Wherever a wrong reading of the framing would turn
part of the bytes into a request of its own, that part is SMUG, a request for /smuggled: the
runner proves from the handler log that sluice never ran one that the client (directly) or the
proxy (through nginx / HAProxy) did not send as a request of its own.
"""

SMUG = b"GET /smuggled?case={ID} HTTP/1.1\r\nHost: x\r\n\r\n"


class Case:
    def __init__(self, name, data, statuses, close=True, bodies=None, heads=(), ref=""):
        self.name = name
        self.num = len(CASES) + 1
        self.template = data
        self.statuses = list(statuses)        # direct: every response's status, in order
        self.close = close                    # direct: the connection must close after the last
        self.bodies = bodies                  # direct: per 2xx response, the body length the handler saw
        self.heads = set(heads)               # indexes of responses to HEAD requests
        self.ref = ref                        # the rule it checks

    def tag(self, mode):
        t = "%s%03d" % (mode[0], self.num)
        assert len(t) == len("{ID}")
        return t

    def data(self, mode):
        return self.template.replace(b"{ID}", self.tag(mode).encode())


def R(line, *headers, body=b"", eol=b"\r\n"):
    """A request: the request line, header lines (already formatted), an empty line, the body."""
    out = line.encode("latin-1") + eol
    for h in headers:
        out += (h if isinstance(h, bytes) else h.encode("latin-1")) + eol
    return out + eol + body


def chunk(data):
    return b"%x\r\n" % len(data) + data + b"\r\n"


LAST = b"0\r\n\r\n"
POST = "POST /log?case={ID} HTTP/1.1"
GET = "GET /log?case={ID} HTTP/1.1"
GET2 = "GET /log?case={ID}&n=2 HTTP/1.1"
H = "Host: x"
TE = "Transfer-Encoding: chunked"
SMUG_CHUNKED = chunk(SMUG) + LAST                   # SMUG hidden as chunk data
EARLY_END = LAST + SMUG                             # a chunked reader ends early, then sees SMUG


def cl(n):
    return "Content-Length: %d" % n


CASES = []


def add(*a, **kw):
    CASES.append(Case(*a, **kw))


# ---------------------------------------------------------------- baselines: what must work
add("ok-get", R(GET, H), [200], close=False, bodies=[0])
add("ok-pipelined-3", R(GET, H) + R(GET2, H) + R("GET /log?case={ID}&n=3 HTTP/1.1", H), [200, 200, 200], close=False)
add("ok-post-cl", R(POST, H, cl(5), body=b"hello") + R(GET2, H), [200, 200], close=False, bodies=[5, 0])
add("ok-chunked", R(POST, H, TE, body=chunk(b"hello") + chunk(b" world") + LAST) + R(GET2, H), [200, 200],
    close=False, bodies=[11, 0])
add("ok-chunked-smug-as-data", R(POST, H, TE, body=SMUG_CHUNKED), [200], close=False, bodies=[len(SMUG)],
    ref="a request inside chunk data is data")
add("ok-chunked-upper-hex", R(POST, H, TE, body=b"A\r\n0123456789\r\n" + LAST), [200], close=False, bodies=[10])
add("ok-chunked-ext", R(POST, H, TE, body=b'5;a=b;c="d;e\\"f"\r\nhello\r\n' + LAST), [200], close=False, bodies=[5],
    ref="7.1.1: unrecognized chunk extensions are ignored")
add("ok-chunked-ext-bws", R(POST, H, TE, body=b"5 ;a = b\r\nhello\r\n" + LAST), [200], close=False, bodies=[5],
    ref="7.1.1: BWS around ';' and '=' is parsed and removed")
add("ok-chunked-trailer-dropped", R(POST, H, TE, body=chunk(b"hi") + b"0\r\nContent-Length: 99\r\nX-T: 1\r\n\r\n") +
    R(GET2, H), [200, 200], close=False, bodies=[2, 0], ref="7.1.2: trailers never become headers")
add("ok-leading-crlf", b"\r\n\r\n" + R(GET, H), [200], close=False, ref="2.2: empty lines before a request are ignored")
add("ok-head-then-get", R("HEAD /log?case={ID} HTTP/1.1", H) + R(GET2, H), [200, 200], close=False, heads=[0])
add("ok-http10", R("GET /log?case={ID} HTTP/1.0"), [200], close=True, ref="9.3: HTTP/1.0 closes by default")
add("ok-http10-keepalive", R("GET /log?case={ID} HTTP/1.0", "Connection: keep-alive") +
    R("GET /log?case={ID}&n=2 HTTP/1.0", "Connection: keep-alive"), [200, 200], close=False)
add("ok-cl-ows", R(POST, H, "Content-Length:\t 5  ", body=b"hello"), [200], close=False, bodies=[5],
    ref="5.1: OWS around a field value is not part of it")
add("ok-te-tab-before-value", R(POST, H, "Transfer-Encoding:\tchunked", body=SMUG_CHUNKED), [200], close=False,
    bodies=[len(SMUG)], ref="5.1: HTAB is OWS")
add("ok-te-trailing-space", R(POST, H, "Transfer-Encoding: chunked  ", body=SMUG_CHUNKED), [200], close=False,
    bodies=[len(SMUG)])
add("ok-te-case", R(POST, H, "Transfer-Encoding: ChUnKeD", body=SMUG_CHUNKED), [200], close=False,
    bodies=[len(SMUG)], ref="RFC 9110 7.3: coding names are case-insensitive")
add("ok-host-ipv6", R(GET, "Host: [::1]:8080"), [200], close=False)
add("ok-host-empty", R(GET, "Host:"), [200], close=False, ref="RFC 9110 7.2: an empty Host is allowed")
add("ok-absolute-form", R("GET http://example.com/log?case={ID} HTTP/1.1", "Host: other"), [200], close=False,
    ref="3.2.2: absolute-form is accepted; its authority replaces Host")
add("ok-absolute-form-no-path", R("GET http://example.com?case={ID} HTTP/1.1", H), [200], close=False)
add("ok-fragment-cut", R("GET /log?case={ID}#/smuggled HTTP/1.1", H), [200], close=False,
    ref="a fragment is not part of the target")
add("ok-connection-close-ws", R(GET, H, "Connection: close \t") + SMUG, [200], close=True,
    ref="9.6: close is honoured with trailing whitespace; nothing after it is read")
add("ok-connection-list-close", R(GET, H, "Connection: keep-alive, close") + SMUG, [200], close=True)
add("ok-non-te-lookalike", R(POST, H, "Transfer_Encoding: chunked", cl(len(EARLY_END)), body=EARLY_END),
    [200], close=False, bodies=[len(EARLY_END)], ref="Transfer_Encoding is another field: Content-Length frames")

# ---------------------------------------------------------------- request line (3)
add("rl-double-space", R("GET  /log?case={ID} HTTP/1.1", H), [400], ref="3: single SP between parts")
add("rl-tab-separator", R("GET\t/log?case={ID} HTTP/1.1", H), [400])
add("rl-trailing-space", R("GET /log?case={ID} HTTP/1.1 ", H), [400])
add("rl-lowercase-version", R("GET /log?case={ID} http/1.1", H), [400], ref="2.3: HTTP-name is case-sensitive")
add("rl-version-two-digits", R("GET /log?case={ID} HTTP/1.10", H), [400])
add("rl-http09", b"GET /log?case={ID}\r\n\r\n", [400])
add("rl-version-2", R("GET /log?case={ID} HTTP/2.0", H), [505])
add("rl-bare-lf", R(GET, H, eol=b"\n") + SMUG, [400], ref="2.2: bare LF is rejected (allowed by 2.2)")
add("rl-leading-bare-lf", b"\n" + R(GET, H), [400])
add("rl-bare-cr", b"GET /log?case={ID} HTTP/1.1\rHost: x\r\n\r\n", [400], ref="2.2: bare CR is invalid")
add("rl-unknown-method", R("FROB /log?case={ID} HTTP/1.1", H), [501], ref="RFC 9110 9.1: unknown method 501")
add("rl-lowercase-method", R("get /log?case={ID} HTTP/1.1", H), [501], ref="RFC 9110 9.1: methods are case-sensitive")
add("rl-long-token-method", R("X" * 40 + " /log?case={ID} HTTP/1.1", H), [501])
add("rl-method-not-token", R("G@T /log?case={ID} HTTP/1.1", H), [400])
add("rl-nul-in-target", R("GET /log?case={ID}\x00 HTTP/1.1", H), [400])
add("rl-high-byte-target", R("GET /log?case={ID}\xff HTTP/1.1", H), [400])
add("rl-target-not-path", R("GET log?case={ID} HTTP/1.1", H), [400])
add("rl-asterisk-get", R("GET * HTTP/1.1", H), [400])
add("rl-connect", R("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"), [501])
add("rl-absolute-ftp", R("GET ftp://example.com/log?case={ID} HTTP/1.1", H), [400])
add("rl-absolute-userinfo", R("GET http://u:p@example.com/log?case={ID} HTTP/1.1", H), [400],
    ref="RFC 9110 4.2.4: userinfo is an error")
add("rl-absolute-empty-host", R("GET http:///log?case={ID} HTTP/1.1", H), [400], ref="RFC 9110 4.2.1")
add("rl-uri-too-long", R("GET /log?case={ID}&" + "a" * 1100 + " HTTP/1.1", H), [414], ref="3: 414")

# ---------------------------------------------------------------- field lines (5)
add("hd-space-before-colon-te", R(POST, H, "Transfer-Encoding : chunked", cl(len(EARLY_END)), body=EARLY_END),
    [400], ref="5.1: whitespace before the colon MUST be rejected with 400")
add("hd-tab-before-colon", R(POST, H, "Content-Length\t: 5", body=b"hello"), [400])
add("hd-obs-fold-te", R(POST, H, "X-A: a", " Transfer-Encoding: chunked", cl(len(EARLY_END)), body=EARLY_END),
    [400], ref="5.2: obs-fold rejected with 400")
add("hd-obs-fold-cl", R(POST, H, "X-A: a", "\tContent-Length: 4", body=b"abcd" + SMUG), [400])
add("hd-obs-fold-value", R(GET, H, "X-A: a", "  folded"), [400])
add("hd-space-first-line", R(GET, " Host: x", H), [400], ref="2.2: whitespace after the start line")
add("hd-bare-cr-hides-te", R(POST, H, b"X-A: a\rTransfer-Encoding: chunked", cl(len(EARLY_END)), body=EARLY_END),
    [400], ref="2.2: a bare CR is not a line end")
add("hd-bare-lf-cl", b"POST /log?case={ID} HTTP/1.1\r\nHost: x\nContent-Length: 0\r\n\r\n" + SMUG, [400],
    ref="2.2: bare LF is rejected")
add("hd-bare-lf-end", b"POST /log?case={ID} HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\n" % len(SMUG) + SMUG, [400])
add("hd-nul-value", R(GET, H, "X-A: a\x00b"), [400])
add("hd-nul-name", R(GET, H, "X-\x00A: b"), [400])
add("hd-del-value", R(GET, H, "X-A: a\x7fb"), [400])
add("hd-vtab-value", R(GET, H, "X-A: a\x0bb"), [400])
add("hd-no-colon", R(GET, H, "X-A b"), [400])
add("hd-empty-name", R(GET, H, ": b"), [400])
add("hd-name-nontoken", R(GET, H, "X[A]: b"), [400])
add("hd-too-many", R(GET, H, *["X-N%d: 1" % i for i in range(25)]), [431])
add("hd-block-too-large", R(GET, H, "X-Big: " + "v" * 5000), [431])
add("hd-no-host", R(GET), [400], ref="3.2: Host is required in HTTP/1.1")
add("hd-two-hosts", R(GET, H, "Host: y"), [400], ref="3.2: more than one Host: 400")
add("hd-host-list", R(GET, "Host: a, b"), [400], ref="3.2: an invalid Host value: 400")
add("hd-host-space", R(GET, "Host: a b"), [400])
add("hd-host-userinfo", R(GET, "Host: u@a"), [400])
add("hd-host-bad-port", R(GET, "Host: a:8x"), [400])
add("hd-expect-unknown", R(POST, H, cl(1), "Expect: tea", body=b"x"), [417])

# ---------------------------------------------------------------- Content-Length (6.2, RFC 9110 8.6)
add("cl-duplicate-same", R(POST, H, cl(len(SMUG)), cl(len(SMUG)), body=SMUG), [400], ref="6.3: invalid CL is an error")
add("cl-duplicate-differ", R(POST, H, cl(0), cl(len(SMUG)), body=SMUG), [400])
add("cl-list", R(POST, H, "Content-Length: %d, %d" % (len(SMUG), len(SMUG)), body=SMUG), [400])
add("cl-plus", R(POST, H, "Content-Length: +0", body=SMUG), [400])
add("cl-minus", R(POST, H, "Content-Length: -1", body=SMUG), [400])
add("cl-hex", R(POST, H, "Content-Length: 0x0", body=SMUG), [400])
add("cl-inner-space", R(POST, H, "Content-Length: 0 %d" % len(SMUG), body=SMUG), [400])
add("cl-trailing-junk", R(POST, H, "Content-Length: 0a", body=SMUG), [400])
add("cl-empty", R(POST, H, "Content-Length:", body=SMUG), [400])
add("cl-overflow", R(POST, H, "Content-Length: 18446744073709551616", body=SMUG), [400])
add("cl-over-limit", R(POST, H, cl(1 << 20)), [413])

# ---------------------------------------------------------------- Transfer-Encoding (6.1, 6.3): CL.TE, TE.CL, TE.TE
add("te-cl-te", R(POST, H, cl(len(EARLY_END)), TE, body=EARLY_END), [400], ref="6.3: CL with TE: 400 and close")
add("te-te-cl", R(POST, H, TE, "Content-Length: 4", body=SMUG_CHUNKED), [400])
add("te-xchunked", R(POST, H, "Transfer-Encoding: xchunked", cl(len(EARLY_END)), body=EARLY_END), [400])
add("te-chunked-identity", R(POST, H, "Transfer-Encoding: chunked, identity", body=EARLY_END), [400],
    ref="6.3: chunked not last: 400")
add("te-identity-chunked", R(POST, H, "Transfer-Encoding: identity, chunked", body=SMUG_CHUNKED), [501],
    ref="6.1: unknown coding: 501")
add("te-gzip-chunked", R(POST, H, "Transfer-Encoding: gzip, chunked", body=SMUG_CHUNKED), [501])
add("te-gzip", R(POST, H, "Transfer-Encoding: gzip", body=SMUG), [400])
add("te-chunked-twice-list", R(POST, H, "Transfer-Encoding: chunked, chunked", body=SMUG_CHUNKED), [400],
    ref="7: chunked MUST NOT be applied twice")
add("te-duplicate-lines", R(POST, H, TE, TE, body=SMUG_CHUNKED), [400])
add("te-duplicate-case", R(POST, H, TE, "transfer-encoding: identity", body=SMUG_CHUNKED), [400])
add("te-quoted", R(POST, H, 'Transfer-Encoding: "chunked"', cl(len(EARLY_END)), body=EARLY_END), [400])
add("te-params", R(POST, H, "Transfer-Encoding: chunked;x=1", body=SMUG_CHUNKED), [400])
add("te-empty", R(POST, H, "Transfer-Encoding:", cl(len(EARLY_END)), body=EARLY_END), [400])
add("te-empty-element", R(POST, H, "Transfer-Encoding: ,chunked", body=SMUG_CHUNKED), [400])
add("te-vtab", R(POST, H, "Transfer-Encoding: \x0bchunked", cl(len(EARLY_END)), body=EARLY_END), [400])
add("te-formfeed", R(POST, H, "Transfer-Encoding:\x0cchunked", body=SMUG_CHUNKED), [400])
add("te-nul", R(POST, H, "Transfer-Encoding: chunked\x00", body=SMUG_CHUNKED), [400])
add("te-http10", R("POST /log?case={ID} HTTP/1.0", TE, body=EARLY_END), [400],
    ref="6.1: HTTP/1.0 with TE has faulty framing")
add("te-http10-with-cl", R("POST /log?case={ID} HTTP/1.0", TE, cl(len(EARLY_END)), body=EARLY_END), [400])

# ---------------------------------------------------------------- chunked body (7.1)
add("ck-no-crlf-after-data", R(POST, H, TE, body=b"5\r\nhelloXX0\r\n\r\n") + SMUG, [400],
    ref="7.1: the CRLF after chunk data is required")
add("ck-lf-after-data", R(POST, H, TE, body=b"5\r\nhello\n0\r\n\r\n") + SMUG, [400])
add("ck-data-longer", R(POST, H, TE, body=b"5\r\nhelloworld\r\n" + LAST) + SMUG, [400])
add("ck-data-shorter", R(POST, H, TE, body=b"5\r\nhel\r\n" + LAST) + SMUG, [400])
add("ck-size-0x", R(POST, H, TE, body=b"0x5\r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-plus", R(POST, H, TE, body=b"+5\r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-minus", R(POST, H, TE, body=b"-5\r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-leading-space", R(POST, H, TE, body=b" 5\r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-trailing-space", R(POST, H, TE, body=b"5 \r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-junk", R(POST, H, TE, body=b"2 xyz\r\nhi\r\n" + LAST) + SMUG, [400], ref="7.1: chunk-size is 1*HEXDIG")
add("ck-size-empty", R(POST, H, TE, body=b"\r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-overflow", R(POST, H, TE, body=b"ffffffffffffffff1\r\nhello\r\n" + LAST) + SMUG, [413])
add("ck-size-too-many-digits", R(POST, H, TE, body=b"00000000000000000005\r\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-over-limit", R(POST, H, TE, body=b"100000\r\n"), [413])
add("ck-size-bare-lf", R(POST, H, TE, body=b"5\nhello\r\n" + LAST) + SMUG, [400])
add("ck-size-bare-cr", R(POST, H, TE, body=b"5\rhello\r\n" + LAST) + SMUG, [400])
add("ck-ext-empty", R(POST, H, TE, body=b"2;\r\nhi\r\n" + LAST) + SMUG, [400], ref="7.1.1: ext-name is a token")
add("ck-ext-unbalanced-quote", R(POST, H, TE, body=b'2;a="b\r\nhi\r\n' + LAST) + SMUG, [400])
add("ck-ext-quote-hides-crlf", R(POST, H, TE, body=b'2;a="\r\n0\r\n\r\n' + SMUG + b'"\r\nhi\r\n' + LAST), [400])
add("ck-ext-space-in-value", R(POST, H, TE, body=b"2;a=b c\r\nhi\r\n" + LAST) + SMUG, [400])
add("ck-ext-bare-lf", R(POST, H, TE, body=b"2;a\nhi\r\n" + LAST) + SMUG, [400])
add("ck-ext-nul", R(POST, H, TE, body=b"2;a\x00\r\nhi\r\n" + LAST) + SMUG, [400])
add("ck-ext-too-long", R(POST, H, TE, body=b"2;a=" + b"b" * 5000 + b"\r\nhi\r\n" + LAST), [400],
    ref="7.1.1: a server ought to limit chunk extensions")
add("ck-last-no-crlf", R(POST, H, TE, body=b"0\r\n") + SMUG, [400], ref="7.1.2: a request line is no trailer field")
add("ck-trailer-obs-fold", R(POST, H, TE, body=b"0\r\nX-T: a\r\n b\r\n\r\n") + SMUG, [400])
add("ck-trailer-bare-lf", R(POST, H, TE, body=b"0\r\nX-T: a\n\r\n") + SMUG, [400])
add("ck-trailer-nul", R(POST, H, TE, body=b"0\r\nX-T: a\x00\r\n\r\n") + SMUG, [400])
add("ck-trailer-too-large", R(POST, H, TE, body=b"0\r\nX-T: " + b"v" * 5000 + b"\r\n\r\n"), [431])
