// node-server.js: optional Node.js anchor for bench/http.sh (plain http module, one process).
'use strict';
const http = require('http');
const port = Number(process.env.PORT || 5082);
const hello = Buffer.from('hello world\n');
let n = 0;
http.createServer((req, res) => {
  if (req.url === '/hello') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': hello.length });
    res.end(hello);
  } else if (req.url === '/json') {
    n += 1;
    const body = JSON.stringify({ ok: true, id: n, name: 'x' });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  } else {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
}).listen(port, '127.0.0.1');
