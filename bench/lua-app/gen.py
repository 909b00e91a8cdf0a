"""gen.py: writes the request bodies of bench/lua.sh: text.txt (~10 KB of prose with markup) and
doc.json (~5 KB JSON document). Deterministic, so every run sends the same bytes.
Usage: python3 gen.py OUTDIR"""
import json
import random
import sys

out = sys.argv[1]
rnd = random.Random(21)
WORDS = ("the quick brown fox jumps over lazy dog sluice server handler request response "
         "coroutine watchdog compiled interpreter benchmark throughput latency connection "
         "keepalive pipeline worker runtime allocation collector <b>bold</b> &amp; \"quoted\" "
         "translation international performance measurement").split()
text = []
size = 0
while size < 10 * 1024:
    line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 14)))
    line = line[0].upper() + line[1:] + ".  "
    text.append(line)
    size += len(line) + 1
with open(out + "/text.txt", "w") as f:
    f.write("\n".join(text)[: 10 * 1024])

items = []
for i in range(1, 200):
    items.append({"id": i, "name": "item-%03d %s" % (i, rnd.choice(WORDS[:12])), "price": round(rnd.uniform(1, 99), 2),
                  "qty": rnd.randint(1, 9), "active": rnd.random() < 0.8,
                  "tags": [rnd.choice(WORDS[:20]) for _ in range(2)]})
    doc = {"id": "order-2021", "version": 3, "owner": {"id": 77, "name": "ada lovelace", "email": "ada@example.com"},
           "items": items, "notes": "deliver between 9 and 5", "flags": {"gift": False, "express": True}}
    if len(json.dumps(doc, separators=(",", ":"))) >= 5 * 1024:
        break
with open(out + "/doc.json", "w") as f:
    json.dump(doc, f, separators=(",", ":"))
