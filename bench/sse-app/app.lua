-- app.lua for bench/sse.sh: the same two endpoints as bench/nchan and bench/ssefloor.c.
--   GET  /sub/:ch   an SSE stream on channel :ch (anonymous: counted only toward the total cap)
--   POST /pub/:ch   publishes the request body, as is, as the data of one event on :ch
local app = require "sluice"

app.sse("/sub/:ch", function(req)
  return { channel = req.params.ch }
end)

app.post("/pub/:ch", function(req)
  local id, err = app.publish(req.params.ch, { data = req.body })
  if not id then return { status = 400, body = err } end
  return { status = 201, body = tostring(id) }
end)
