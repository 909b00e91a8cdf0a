"""test_deploy.py: the files in deploy/ are checked and run here, not only written.

- nginx: `nginx -t` on deploy/nginx/sluice.conf (in a temp prefix), then nginx in front of two
  sluice instances on loopback sharing one redis-server (so a publish on either instance reaches
  a stream on the other, as in production): /ready passes, an SSE stream passes through unbuffered, the
  sticky hash keeps a session cookie on one instance, a stopped instance is routed around.
- HAProxy (when installed): `haproxy -c`, then the same checks plus its active /ready checks.
- systemd: `systemd-analyze verify` on the unit (when available).
- Kubernetes: the manifests parse (PyYAML when present, else a structural reader) and hold the
  probes, drain timing and selectors the docs promise.

Run: python3 tests/integration/test_deploy.py   (SLUICE_BIN overrides build/sluice)
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, SLUICE_BIN, Server, check, free_port, get, post, run_tests, test, wait_for  # noqa: E402

HOST = "127.0.0.1"
DEPLOY = os.path.join(ROOT, "deploy")

APP = r'''
local app = require "sluice"
app.get("/hello", function() return "hello world\n" end)
app.get("/whoami", function() return os.getenv("PORT") .. "\n" end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
app.post("/pub/:room", function(req)
  return { status = 201, json = { id = app.publish("room:" .. req.params.room, { data = req.body }) } }
end)
'''
CONFIG = 'return { workers = 1, scripts = { "app.lua" } }\n'

FIXTURE = tempfile.mkdtemp(prefix="sluice-deploy-fixture-")
for name, text in (("config.lua", CONFIG), ("app.lua", APP)):
    with open(os.path.join(FIXTURE, name), "w") as f:
        f.write(text)

S1 = S2 = None
REDIS_PORT = free_port()
REDIS_DIR = tempfile.mkdtemp(prefix="sluice-deploy-redis-")
REDIS = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", HOST, "--save", "", "--dir", REDIS_DIR],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ENV = {"REDIS_URL": "redis://%s:%d" % (HOST, REDIS_PORT)}


def rewrite(text, listen_port, ports, listen_fmt):
    """Points the (sluice-listen) line at listen_port and the (sluice-upstream) lines at ports."""
    out, i = [], 0
    for ln in text.splitlines():
        if "(sluice-upstream)" in ln:
            if i < len(ports):
                out.append(re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:%d" % ports[i], ln))
            i += 1
            continue
        if "(sluice-listen)" in ln:
            ln = re.sub(r"(listen|bind)\s+[^;\s]+", listen_fmt % listen_port, ln)
        out.append(ln)
    check(i >= 2, "expected upstream lines marked (sluice-upstream)")
    return "\n".join(out) + "\n"


def wait_port(port, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("port %d did not open" % port)


def sse_open(port, path, headers=""):
    s = socket.create_connection((HOST, port), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n%s\r\n" % (path, headers)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        check(chunk, "stream closed before headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return s, head.decode("latin-1"), rest


def read_until(s, buf, marker, timeout):
    s.settimeout(timeout)
    while marker not in buf:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            return buf, False
        if not chunk:
            return buf, False
        buf += chunk
    return buf, True


def check_proxy(port, name):
    """What both balancers must do: readiness, unbuffered SSE, stickiness."""
    st, _, body = get(port, "/ready")
    check(st == 200 and b"ready" in body, "%s /ready: %r %r" % (name, st, body))
    s, head, buf = sse_open(port, "/events/lb")
    check(" 200 " in head.split("\r\n")[0] and "text/event-stream" in head, "%s stream head: %r" % (name, head))
    # Each event must arrive on its own, while the stream stays open and before the next one is
    # published: a buffering proxy holds a small event until its buffer fills or the stream ends,
    # which is never here (no more than heartbeats follow). So the wait is only a ceiling for a
    # loaded machine, not a latency measurement.
    for i in range(3):
        st, _, body = post(S1.port if i % 2 == 0 else S2.port, "/pub/lb", "e%d" % i)
        check(st == 201, "%s: publish e%d: %r %r" % (name, i, st, body[:200]))
        buf, ok = read_until(s, buf, b"data: e%d\n" % i, 15.0)
        check(ok, "%s: event %d did not pass through while the stream was open (buffered?): %r" % (name, i, buf[-300:]))
    s.close()


# ------------------------------------------------------------------ nginx

@test
def nginx_config_is_valid_and_proxies_streams_unbuffered():
    nginx = shutil.which("nginx")
    check(nginx, "nginx is not installed (apt-get install nginx)")
    prefix = tempfile.mkdtemp(prefix="sluice-nginx-")
    os.chmod(prefix, 0o777)
    port = free_port()
    with open(os.path.join(DEPLOY, "nginx", "sluice.conf")) as f:
        site = rewrite(f.read(), port, [S1.port, S2.port], "listen 127.0.0.1:%d")
    with open(os.path.join(prefix, "sluice.conf"), "w") as f:
        f.write(site)
    main = """
worker_processes 1;
pid %(p)s/nginx.pid;
error_log %(p)s/error.log warn;
events { worker_connections 1024; }
http {
    access_log %(p)s/access.log;
    client_body_temp_path %(p)s/body;
    proxy_temp_path %(p)s/proxy;
    fastcgi_temp_path %(p)s/fastcgi;
    uwsgi_temp_path %(p)s/uwsgi;
    scgi_temp_path %(p)s/scgi;
    include %(p)s/sluice.conf;
}
""" % {"p": prefix}
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(main)
    t = subprocess.run([nginx, "-t", "-p", prefix, "-c", conf], capture_output=True, text=True)
    check(t.returncode == 0, "nginx -t: " + t.stderr)
    proc = subprocess.Popen([nginx, "-p", prefix, "-c", conf, "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port)
        check_proxy(port, "nginx")
        # sticky: one session cookie -> one instance; many cookies -> both instances
        seen = {get(port, "/whoami", {"Cookie": "sluice_sid=alpha"})[2] for _ in range(8)}
        check(len(seen) == 1, "one cookie reached several instances: %r" % seen)
        spread = {get(port, "/whoami", {"Cookie": "sluice_sid=c%d" % i})[2] for i in range(24)}
        check(len(spread) == 2, "the hash did not spread sessions over both instances: %r" % spread)
        # an instance goes away: its clients are routed to the other one without errors
        S2.signal(signal.SIGTERM)
        S2.wait()
        codes = [get(port, "/hello", {"Cookie": "sluice_sid=c%d" % i})[0] for i in range(12)]
        check(codes == [200] * 12, "requests while an instance is down: %r" % codes)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(prefix, ignore_errors=True)
        restart_s2()


# ------------------------------------------------------------------ HAProxy

@test
def haproxy_config_is_valid_and_checks_ready():
    haproxy = shutil.which("haproxy")
    if not haproxy:
        print("skip: haproxy not installed (apt-get install haproxy)")
        return
    src = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")
    t = subprocess.run([haproxy, "-c", "-f", src], capture_output=True, text=True)
    check(t.returncode == 0, "haproxy -c (as shipped): " + t.stdout + t.stderr)
    with open(src) as f:
        text = f.read()
    check(re.search(r"inter 10s", text) and "uri /ready" in text, "health check is GET /ready every 10 s")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="sluice-haproxy-")
    cfg = os.path.join(tmp, "haproxy.cfg")
    # same file, on test ports, checking every 200 ms so the test sees a failover quickly
    with open(cfg, "w") as f:
        f.write(rewrite(text, port, [S1.port, S2.port], "bind 127.0.0.1:%d").replace("inter 10s", "inter 200ms"))
    t = subprocess.run([haproxy, "-c", "-f", cfg], capture_output=True, text=True)
    check(t.returncode == 0, "haproxy -c (test ports): " + t.stdout + t.stderr)
    hlog = open(os.path.join(tmp, "haproxy.log"), "w+")      # its log (stdout) and alerts (stderr)
    proc = subprocess.Popen([haproxy, "-db", "-f", cfg], stdout=hlog, stderr=subprocess.STDOUT)

    def said(what):
        with open(hlog.name) as f:
            return what in f.read()
    try:
        wait_port(port)
        # its health checks (every 200 ms) reach both instances: waited for, not assumed after 0.5 s
        wait_for(lambda: "GET /ready" in S1.log() and "GET /ready" in S2.log(), 15, "HAProxy to probe /ready on both")
        check_proxy(port, "haproxy")
        st, h, body = get(port, "/whoami")
        cookie = h.get("set-cookie", "").split(";")[0]
        check(cookie.startswith("SLUICE_LB="), "sticky cookie: %r" % h)
        seen = {get(port, "/whoami", {"Cookie": cookie})[2] for _ in range(8)}
        check(seen == {body}, "sticky cookie ignored: %r vs %r" % (seen, body))
        S2.signal(signal.SIGTERM)
        S2.wait()
        # two failed checks take it out: HAProxy says so ("Server sluice/s2 is DOWN")
        wait_for(lambda: said("s2 is DOWN"), 15, "HAProxy to mark the stopped instance DOWN")
        codes = [get(port, "/hello")[0] for _ in range(12)]
        check(codes == [200] * 12, "requests after an instance stopped: %r" % codes)
    finally:
        proc.terminate()
        proc.wait(10)
        hlog.close()
        shutil.rmtree(tmp, ignore_errors=True)
        restart_s2()


# ------------------------------------------------------------------ systemd

@test
def systemd_unit_verifies():
    unit = os.path.join(DEPLOY, "systemd", "sluice@.service")
    with open(unit) as f:
        text = f.read()
    m = re.search(r"^LimitNOFILE=(\d+)", text, re.M)
    check(m and int(m.group(1)) >= 20000, "LimitNOFILE must allow 10k+ connections")
    stop = re.search(r"^TimeoutStopSec=(\d+)", text, re.M)
    check(stop and int(stop.group(1)) > 30, "TimeoutStopSec must exceed shutdown_timeout (30 s)")
    sa = shutil.which("systemd-analyze")
    if not sa:
        print("skip: systemd-analyze not available")
        return
    tmp = tempfile.mkdtemp(prefix="sluice-unit-")
    try:
        path = os.path.join(tmp, "sluice@5001.service")
        with open(path, "w") as f:        # the real binary, so verify can check ExecStart
            f.write(text.replace("/opt/sluice/bin/sluice", os.path.abspath(SLUICE_BIN)))
        t = subprocess.run([sa, "verify", path], capture_output=True, text=True)
        msgs = [ln for ln in (t.stdout + t.stderr).splitlines() if ln.strip()]
        check(t.returncode == 0 and not msgs, "systemd-analyze verify: %r" % msgs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ Kubernetes

def load_yaml_docs(text):
    try:
        import yaml  # type: ignore
        return [d for d in yaml.safe_load_all(text) if d]
    except ImportError:
        return mini_yaml(text)


def mini_yaml(text):
    """Enough YAML for these manifests: block maps and lists, scalars, no flow collections
    except one-line [..] lists. Returns a list of documents."""
    docs = []
    for raw_doc in re.split(r"^---\s*$", text, flags=re.M):
        lines = [ln for ln in raw_doc.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            continue
        pos = [0]

        def scalar(v):
            v = v.strip()
            if v.startswith("[") and v.endswith("]"):
                return [scalar(x) for x in v[1:-1].split(",") if x.strip()]
            if v[:1] in "\"'":
                return v[1:-1]
            if re.fullmatch(r"-?\d+", v):
                return int(v)
            return {"true": True, "false": False}.get(v, v)

        def block(indent):
            first = lines[pos[0]]
            if first.strip().startswith("- "):
                out = []
                while pos[0] < len(lines):
                    ln = lines[pos[0]]
                    ind = len(ln) - len(ln.lstrip())
                    if ind < indent or not ln.strip().startswith("- "):
                        break
                    body = ln.strip()[2:]
                    if ":" in body and not body.startswith(("\"", "'")) and not re.match(r"^[^:]+:\S", body):
                        lines[pos[0]] = " " * (ind + 2) + body        # "- k: v" opens a map
                        out.append(block(ind + 2))
                    else:
                        pos[0] += 1
                        out.append(scalar(body))
                return out
            out = {}
            while pos[0] < len(lines):
                ln = lines[pos[0]]
                ind = len(ln) - len(ln.lstrip())
                if ind < indent or ln.strip().startswith("- "):
                    break
                key, _, val = ln.strip().partition(":")
                pos[0] += 1
                if val.strip():
                    out[key] = scalar(val)
                elif pos[0] < len(lines):
                    nxt = lines[pos[0]]
                    nind = len(nxt) - len(nxt.lstrip())
                    out[key] = block(nind) if nind > ind or nxt.strip().startswith("- ") else None
            return out
        docs.append(block(0))
    return docs


@test
def kubernetes_manifests_hold_together():
    with open(os.path.join(DEPLOY, "kubernetes", "sluice.yaml")) as f:
        text = f.read()
    docs = load_yaml_docs(text)
    kinds = {d["kind"]: d for d in docs}
    for k in ("Deployment", "Service", "PodDisruptionBudget"):
        check(k in kinds, "missing %s (have %r)" % (k, list(kinds)))
    dep, svc, pdb = kinds["Deployment"], kinds["Service"], kinds["PodDisruptionBudget"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "deployment selector")
    check(svc["spec"]["selector"].items() <= labels.items(), "service selector does not match the pods")
    check(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), "PDB selector does not match")
    check(pdb["spec"].get("minAvailable", 0) < dep["spec"]["replicas"], "PDB must allow one disruption")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(c["livenessProbe"]["httpGet"]["path"] == "/health", "liveness probe is /health")
    check(c["readinessProbe"]["httpGet"]["path"] == "/ready", "readiness probe is /ready")
    check(c["readinessProbe"]["periodSeconds"] == 10, "readiness every 10 s")
    port_names = {p["name"] for p in c["ports"]}
    check(svc["spec"]["ports"][0]["targetPort"] in port_names, "service targetPort names a container port")
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    check(pod["terminationGracePeriodSeconds"] > sleep + 30,
          "terminationGracePeriodSeconds must exceed preStop + shutdown_timeout (30 s)")
    env = {e["name"] for e in c["env"]}
    check({"REDIS_URL", "DATABASE_URL", "PORT"} <= env, "env: %r" % env)


# ------------------------------------------------------------------ driver

def start(name):
    s = Server(FIXTURE, env=ENV)
    s.start()
    return s


def wait_linked(s):
    """s is subscribed to the shared event channel: a publish on the other instance reaches it."""
    wait_for(lambda: b'sluice_redis_connected{conn="subscriber"} 1' in get(s.port, "/metrics")[2], 15,
             "instance :%d to link to Redis" % s.port)


def restart_s2():
    global S2
    if S2.proc and S2.proc.poll() is None:
        return
    port = S2.port
    S2.cleanup()
    S2 = Server(FIXTURE, env=dict(ENV, PORT=str(port)))
    # keep the port the balancer config names
    S2.env["PORT"] = str(port)
    S2.port = port
    S2._errf = tempfile.NamedTemporaryFile(prefix="sluice-stderr-", suffix=".log", delete=False)
    S2.proc = subprocess.Popen([SLUICE_BIN, "run", "--config", S2.config], env=S2.env, stdin=subprocess.DEVNULL,
                               stdout=S2._errf, stderr=S2._errf, cwd=S2.fixture)
    check(S2._wait_healthy(), "restart of instance 2 failed: " + S2.log()[-1000:])
    wait_linked(S2)      # healthy is not enough: the next test publishes across the two


def main():
    global S1, S2
    try:
        wait_port(REDIS_PORT)
        S1, S2 = start("s1"), start("s2")
        for s in (S1, S2):      # both subscribed to the shared event channel
            wait_linked(s)
        run_tests()
    finally:
        REDIS.kill()
        REDIS.wait()
        shutil.rmtree(REDIS_DIR, ignore_errors=True)
        for s in (S1, S2):
            if s is None:
                continue
            try:
                if s.proc and s.proc.poll() is None:
                    s.stop()
            finally:
                s.cleanup()
        shutil.rmtree(FIXTURE, ignore_errors=True)


if __name__ == "__main__":
    main()
