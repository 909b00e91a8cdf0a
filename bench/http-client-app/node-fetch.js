// node-fetch.js: Node.js anchor for bench/http-client.sh: the same /proxy with the built-in fetch
// (undici, keep-alive pool), one process.
'use strict';
const http = require('http');
const port = Number(process.env.PORT || 5092);
const UP = process.env.BENCH_UPSTREAM;
http.createServer(async (req, res) => {
  if (req.url === '/proxy') {
    try {
      const r = await fetch(UP);
      const body = Buffer.from(await r.arrayBuffer());
      res.writeHead(r.status, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
      res.end(body);
    } catch (e) {
      res.writeHead(502, { 'Content-Length': 0 });
      res.end();
    }
  } else {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
}).listen(port, '127.0.0.1');
