// es_client.js: the npm `eventsource` package as a subscriber, driven by a test over stdio.
//   node es_client.js <url> [event-type ...]
// Prints one JSON line per happening: {"t":"open"}, {"t":"error","code":...,"message":...},
// {"t":"ev","type":...,"id":...,"data":...}. Exits when stdin closes (the test is done or died).
"use strict";
const { EventSource } = require("eventsource");

const [url, ...types] = process.argv.slice(2);
if (!url) {
  console.error("usage: node es_client.js <url> [event-type ...]");
  process.exit(2);
}
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const es = new EventSource(url);
es.onopen = () => out({ t: "open" });
es.onerror = (e) => out({ t: "error", code: e.code === undefined ? null : e.code, message: e.message || null,
                          state: es.readyState });
for (const type of types.length ? types : ["message"]) {
  es.addEventListener(type, (e) => out({ t: "ev", type, id: e.lastEventId, data: e.data }));
}
process.stdin.resume();
process.stdin.on("end", () => { es.close(); process.exit(0); });
