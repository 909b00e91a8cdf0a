"""logins.py for bench/toolkit.sh: keeps CONC logins (POST /login, one Argon2id verify each) in
flight against 127.0.0.1:PORT for SECS seconds; prints how many were answered."""
import http.client
import sys
import threading
import time

port, conc, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
done = [0]
lock = threading.Lock()
stop = time.monotonic() + secs


def worker():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < stop:
        c.request("POST", "/login", body=b"the password")
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit("login answered %d" % r.status)
        with lock:
            done[0] += 1


ts = [threading.Thread(target=worker) for _ in range(conc)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(done[0])
