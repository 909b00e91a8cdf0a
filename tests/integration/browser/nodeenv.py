"""nodeenv.py: the Node side of the integration tests (npm eventsource, playwright-core + Chromium).

    from nodeenv import ensure_modules, Browser, ESClient

ensure_modules()  installs package.json's pinned packages (package-lock.json, `npm ci`) into
                  tests/integration/browser/node_modules when they are missing, bounded in time;
                  returns None when ready, or a reason to skip when npm/node are absent. A failed
                  install raises: that is a broken environment, not a skip.
Browser           headless /usr/bin/chromium in a throwaway profile, driven by driver.js over
                  stdio (goto, js, wait, screenshot, console errors).
ESClient          the `eventsource` package subscribed to a URL (es_client.js); its events arrive
                  on a queue as dicts.
Every wait is bounded; processes are killed on close().
"""
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("eventsource", "playwright-core")
INSTALL_TIMEOUT = 240
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _installed():
    return all(os.path.isfile(os.path.join(HERE, "node_modules", m, "package.json")) for m in MODULES)


def ensure_modules():
    """None when node_modules is ready; a skip reason when node or npm is missing."""
    if not shutil.which("node"):
        return "node is not installed (apt-get install nodejs npm)"
    if _installed():
        return None
    npm = shutil.which("npm")
    if not npm:
        return "npm is not installed (apt-get install npm); needed for %s" % ", ".join(MODULES)
    # two test files may start at once: one installs, the other waits for it
    with open(os.path.join(tempfile.gettempdir(), "sluice-browser-npm.lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if _installed():
            return None
        t0 = time.monotonic()
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT)
        if r.returncode != 0 or not _installed():
            raise RuntimeError("npm ci in %s failed (%d):\n%s" % (HERE, r.returncode, r.stdout.decode(errors="replace")[-3000:]))
        print("# npm ci: %s installed in %.1fs" % (", ".join(MODULES), time.monotonic() - t0), flush=True)
    return None


class _NodeProc:
    """A node script whose stdout is JSON lines, read by a thread into a queue."""

    def __init__(self, script, args):
        self.errlog = tempfile.NamedTemporaryFile(prefix="sluice-node-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(["node", os.path.join(HERE, script)] + list(args), cwd=HERE,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errlog)
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                self.q.put({"t": "noise", "line": line.decode(errors="replace")})
        self.q.put(None)                    # EOF

    def get(self, timeout):
        """The next message, or None at EOF; raises queue.Empty after timeout seconds."""
        return self.q.get(timeout=timeout)

    def stderr(self):
        with open(self.errlog.name, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.errlog.close()
        os.unlink(self.errlog.name)


class Browser:
    """Headless Chromium through driver.js; call js()/wait()/goto()/screenshot()."""

    def __init__(self, start_timeout=100):     # driver.js gives the launch 90 s
        self.profile = tempfile.mkdtemp(prefix="sluice-chromium-")
        self.node = _NodeProc("driver.js", [self.profile])
        try:
            first = self.node.get(start_timeout)
        except queue.Empty:
            first = None
        if not first or not first.get("ok"):
            err = (first or {}).get("error") or self.node.stderr()
            self.close()
            raise AssertionError("chromium did not start via playwright-core: %s" % err)

    def call(self, cmd, rpc_timeout=75, **kw):   # only bounds a failure (a goto may take 60 s)
        kw["cmd"] = cmd
        self.node.proc.stdin.write((json.dumps(kw) + "\n").encode())
        self.node.proc.stdin.flush()
        try:
            r = self.node.get(rpc_timeout)
        except queue.Empty:
            raise AssertionError("browser command %s timed out after %s s" % (cmd, rpc_timeout))
        if r is None:
            raise AssertionError("the browser driver exited: %s" % self.node.stderr())
        if not r.get("ok"):
            raise AssertionError("browser %s failed: %s" % (cmd, r.get("error")))
        return r.get("value")

    def goto(self, url):
        return self.call("goto", url=url)

    def js(self, expr):
        return self.call("eval", expr=expr)

    def wait(self, expr, what, timeout=30):      # only bounds a failure: generous for a loaded machine
        try:
            self.call("wait", rpc_timeout=timeout + 5, expr=expr, timeout=timeout)
        except AssertionError as e:
            raise AssertionError("timed out after %s s waiting for %s (%s): %s" % (timeout, what, expr, str(e)[:500]))

    def screenshot(self, path, full=False):
        return self.call("screenshot", path=path, full=full)

    def console_errors(self):
        return self.call("console")

    def close(self):
        try:
            if self.node.proc.poll() is None:
                self.node.proc.stdin.write(b'{"cmd":"close"}\n')
                self.node.proc.stdin.flush()
        except OSError:
            pass
        self.node.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class ESClient:
    """The npm eventsource package subscribed to url, listening to the given event types."""

    def __init__(self, url, types=("message",)):
        self.node = _NodeProc("es_client.js", [url] + list(types))
        self.log = []               # everything received, in order

    def next(self, timeout=5.0):
        """The next message ({"t": "open" | "error" | "ev", ...}); None on timeout or exit."""
        try:
            m = self.node.get(timeout)
        except queue.Empty:
            return None
        if m is not None:
            self.log.append(m)
        return m

    def wait(self, pred, timeout, what):
        """Reads messages until pred(msg) is true; fails after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("eventsource client: timed out waiting for %s; last messages %r; stderr %s"
                                     % (what, self.log[-5:], self.node.stderr()))
            m = self.next(left)
            if m is None and self.node.proc.poll() is not None:
                raise AssertionError("eventsource client exited (%r): %s" % (self.node.proc.returncode, self.node.stderr()))
            if m is not None and pred(m):
                return m

    def events(self):
        return [m for m in self.log if m.get("t") == "ev"]

    def close(self):
        self.node.close()
