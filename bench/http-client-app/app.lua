-- bench/http-client.sh: /proxy calls the upstream (nginx serving a small file) once per request
-- and answers with its body; /slow waits on an upstream that sleeps; /hello is the parallel probe.
local app = require "sluice"
local UP = os.getenv("BENCH_UPSTREAM") or "http://127.0.0.1:17493/small.txt"
local SLOW = os.getenv("BENCH_SLOW") or "http://127.0.0.1:17493/slow"

app.get("/hello", function() return "hello world\n" end)

app.get("/proxy", function()
  local res, err = app.http.get(UP)
  if not res then return { status = 502, body = err } end
  return { status = res.status, body = res.body }
end)

app.get("/slow", function()
  local res, err = app.http.get(SLOW, { timeout = 60, queue_timeout = 60 })
  if not res then return { status = 502, body = err } end
  return { status = res.status, body = res.body }
end)
