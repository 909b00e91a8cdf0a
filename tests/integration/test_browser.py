"""test_browser.py: the team board's HTML client in a real browser (headless Chromium).

Runs `sluice migrate` and `sluice run` on the example app (config.lua at the repository root)
against $DATABASE_URL, opens the page in /usr/bin/chromium, logs in through the form, and then
checks that what other users do through the REST API shows up on the open page by itself, i.e.
through EventSource: a new post, a reaction count, presence of another subscriber. The page
never polls, so these fail when SSE delivery breaks.

The browser is driven over the Chrome DevTools Protocol with a minimal WebSocket client from the
standard library (no npm, no pip). Every wait is bounded; the whole file takes a few seconds.

Run: DATABASE_URL=postgresql://... python3 tests/integration/test_browser.py
     (SLUICE_BIN overrides build/sluice; CHROMIUM overrides /usr/bin/chromium)
"""
import base64
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, SLUICE_BIN, Server, check, free_port, run_tests, test  # noqa: E402

HOST = "127.0.0.1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
RUN_ID = "%x" % (int(time.time() * 1000) % 0xFFFFFFF)   # keeps titles unique across runs


# ------------------------------------------------------------------ a minimal WebSocket client

class WebSocket:
    """Just enough RFC 6455 for CDP: client-masked text frames out, unfragmented frames in."""

    def __init__(self, url, timeout=30.0):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n") % (u.path, u.hostname, u.port, key)
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            check(chunk, "DevTools closed the connection during the WebSocket handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        check(head.startswith(b"HTTP/1.1 101"), "WebSocket handshake refused: %r" % head[:200])

    def send(self, text):
        data = text.encode()
        n = len(data)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        mask = os.urandom(4)
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            check(chunk, "DevTools closed the WebSocket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """The next text message (control frames are skipped; CDP does not fragment)."""
        while True:
            b0, b1 = self._need(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._need(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._need(8))[0]
            payload = self._need(n)
            op = b0 & 0x0F
            if op == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if op in (0x1, 0x0):
                return payload.decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Page:
    """One browser tab over CDP: evaluate JavaScript, wait for a condition."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                check("error" not in msg, "%s failed: %r" % (method, msg.get("error")))
                return msg.get("result", {})

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        check("exceptionDetails" not in r, "JavaScript error in %r: %r" % (expr, r.get("exceptionDetails")))
        return r["result"].get("value")

    def wait_for(self, expr, what, timeout=60.0):
        """Polls expr in the page; the timeout only bounds a failure (a loaded machine runs
        Chromium slowly), so every wait uses the generous default."""
        deadline = time.monotonic() + timeout
        guarded = "(() => { try { return !!(%s); } catch (e) { return false; } })()" % expr   # page may still load
        while time.monotonic() < deadline:
            if self.js(guarded):
                return
            time.sleep(0.05)
        state = self.js("(() => { const t = (id) => (document.getElementById(id) || {}).textContent; "
                        "return [location.href, t('error'), t('status')]; })()")
        raise AssertionError("timed out after %.0f s waiting for %s (%s); page [url, error, status]: %r"
                             % (timeout, what, expr, state))

    def close(self):
        self.ws.close()


class Browser:
    """Headless Chromium with remote debugging on a free loopback port, in a throwaway profile."""

    def __init__(self, url):
        self.profile = tempfile.mkdtemp(prefix="sluice-chromium-")
        self.port = free_port()
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-dev-shm-usage", "--user-data-dir=" + self.profile,
                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=%d" % self.port,
                "--remote-allow-origins=*", url]
        self.log = tempfile.NamedTemporaryFile(prefix="sluice-chromium-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.page = Page(self._page_ws(url))

    def _page_ws(self, url):
        deadline = time.monotonic() + 60      # only bounds a failure: Chromium starts slowly under load
        while time.monotonic() < deadline:
            check(self.proc.poll() is None, "chromium exited (%r):\n%s" % (self.proc.returncode, self.output()))
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=2)
                c.request("GET", "/json/list")
                tabs = json.loads(c.getresponse().read())
                c.close()
                for t in tabs:
                    if t.get("type") == "page" and t.get("url", "").startswith(url.split("#")[0]):
                        return t["webSocketDebuggerUrl"]
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError("chromium's DevTools did not list the page within 60 s:\n" + self.output())

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def close(self):
        try:
            self.page.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        os.unlink(self.log.name)
        shutil.rmtree(self.profile, ignore_errors=True)


# ------------------------------------------------------------------ the API, as other users

PASSWORD = "browser test password"
OWNER, BOT, WATCHER, BROWSER = ("%s-%s" % (n, RUN_ID) for n in ("owner", "api-bot", "watcher", "browser"))
TOKENS = {}


def _post_json(port, path, body):
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("POST", path, body=json.dumps(body).encode(), headers={"content-type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, (json.loads(raw) if raw else None)


def token(port, user):
    """A bearer token for user: an account signed up once per run (names carry RUN_ID)."""
    if user not in TOKENS:
        st, body = _post_json(port, "/api/signup", {"name": user, "password": PASSWORD})
        if st == 409:
            st, body = _post_json(port, "/api/login", {"name": user, "password": PASSWORD})
        check(st in (200, 201) and body and body.get("token"), "sign up %s: %r %r" % (user, st, body))
        TOKENS[user] = body["token"]
    return TOKENS[user]


def api(port, method, path, user, body=None):
    c = http.client.HTTPConnection(HOST, port, timeout=5)
    headers = {"authorization": "Bearer " + token(port, user)}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, (json.loads(raw) if raw else None)


def open_stream(port, path, user):
    """A raw SSE subscriber (another user watching the room, with a bearer token); the caller closes it."""
    bearer = token(port, user)
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer %s\r\n\r\n"
               % (path, bearer)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        check(chunk, "stream closed before its headers")
        head += chunk
    check(head.startswith(b"HTTP/1.1 200"), "stream refused: %r" % head[:200])
    return s


def migrate():
    r = subprocess.run([SLUICE_BIN, "migrate", "--config", os.path.join(ROOT, "config.lua")], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    check(r.returncode == 0, "sluice migrate failed (%d):\n%s" % (r.returncode, out))
    check("migrations:" in out, "sluice migrate printed no summary:\n" + out)


# ------------------------------------------------------------------ the test

@test
def test_page_updates_live_through_eventsource():
    migrate()
    with Server(ROOT, start_timeout=20) as srv:
        port = srv.port
        st, room = api(port, "POST", "/api/rooms", OWNER, {"title": "browser test " + RUN_ID})
        check(st == 201, "create room: %r %r" % (st, room))
        rid = room["id"]
        st, _ = api(port, "POST", "/api/rooms/%d/posts" % rid, OWNER, {"body": "already here " + RUN_ID})
        check(st == 201, "first post: %r" % st)

        browser = Browser("http://%s:%d/#room=%d" % (HOST, port, rid))
        watcher = None
        try:
            page = browser.page
            page.wait_for("document.getElementById('posts').innerText.includes('already here %s')" % RUN_ID,
                          "the page to load the room's posts over REST")
            # sign up through the form, as a person would; the page then opens its EventSource
            page.js("document.getElementById('login-name').value = %s; "
                    "document.getElementById('login-password').value = %s; "
                    "document.getElementById('signup-button').click(); true" % (json.dumps(BROWSER), json.dumps(PASSWORD)))
            page.wait_for("document.getElementById('me').textContent === %s" % json.dumps("signed in as " + BROWSER), "the signup")
            page.wait_for("document.getElementById('status').dataset.live === '1'", "the EventSource to open")

            # 1. a post made through the API by someone else appears without a reload
            text = "live from the API " + RUN_ID
            check(not page.js("document.body.innerText.includes(%s)" % json.dumps(text)), "post visible too early")
            st, post = api(port, "POST", "/api/rooms/%d/posts" % rid, BOT, {"body": text})
            check(st == 201, "create post: %r %r" % (st, post))
            page.wait_for("!!document.querySelector('#post-%d') && document.querySelector('#post-%d .body').textContent === %s"
                          % (post["id"], post["id"], json.dumps(text)), "the new post to appear via EventSource")
            check(page.js("document.querySelectorAll('#posts > li')[0].id") == "post-%d" % post["id"],
                  "the new post is not on top")

            # 2. a reaction by someone else updates the count on that post
            st, _ = api(port, "POST", "/api/posts/%d/reactions" % post["id"], BOT, {"emoji": "🎉"})
            check(st == 201, "react: %r" % st)
            page.wait_for("document.querySelector('#post-%d button[data-emoji=\"🎉\"]').textContent === '🎉 1'" % post["id"],
                          "the reaction count to update via EventSource")

            # 3. presence: another subscriber joining the room is shown as online
            watcher = open_stream(port, "/api/rooms/%d/events" % rid, WATCHER)
            page.wait_for("document.getElementById('online').textContent.includes(%s)" % json.dumps(WATCHER),
                          "presence.join to show the other subscriber")

            # 4. clicking a reaction in the page goes through the API and comes back live
            page.js("document.querySelector('#post-%d button[data-emoji=\"👍\"]').click(); true" % post["id"])
            page.wait_for("document.querySelector('#post-%d button[data-emoji=\"👍\"]').textContent === '👍 1'" % post["id"],
                          "the page's own reaction to be counted")
            st, reactions = api(port, "GET", "/api/posts/%d/reactions" % post["id"], OWNER)
            check(any(r["emoji"] == "👍" and r["users"] == [BROWSER] for r in reactions["reactions"]),
                  "the click did not reach the API: %r" % reactions)

            # 5. posting through the page's form: stored once, shown once (its own event is a no-op)
            mine = "typed in the browser " + RUN_ID
            page.js("document.getElementById('post-body').value = %s; "
                    "document.querySelector('#post-form button').click(); true" % json.dumps(mine))
            page.wait_for("[...document.querySelectorAll('#posts .body')].filter(e => e.textContent === %s).length === 1"
                          % json.dumps(mine), "the page's own post")
            st, listing = api(port, "GET", "/api/rooms/%d/posts?limit=1" % rid, OWNER)
            check(listing["items"][0]["body"] == mine and listing["items"][0]["author"] == BROWSER,
                  "the form post did not reach the API: %r" % listing["items"][:1])
            # its own post.created event comes back too (the page logs "<name> posted" when it
            # handles it): once that happened, the post is still shown once
            page.wait_for("document.getElementById('events').textContent.includes(%s)" % json.dumps(BROWSER + " posted"),
                          "the page's own post.created event")
            check(page.js("[...document.querySelectorAll('#posts .body')].filter(e => e.textContent === %s).length"
                          % json.dumps(mine)) == 1, "the page shows its own post twice")
        finally:
            if watcher:
                watcher.close()
            browser.close()
            api(port, "DELETE", "/api/rooms/%d" % rid, OWNER)      # leave no data behind


if __name__ == "__main__":
    if not os.environ.get("DATABASE_URL"):
        print("skip: DATABASE_URL is not set (the board needs PostgreSQL)")
        print("0 passed, 0 failed")
        sys.exit(0)
    if not os.access(CHROMIUM, os.X_OK):
        print("skip: %s not found (apt-get install chromium)" % CHROMIUM)
        print("0 passed, 0 failed")
        sys.exit(0)
    run_tests()
