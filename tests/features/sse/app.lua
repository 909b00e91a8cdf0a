local app = require "sluice"

local closes = 0

app.sse("/events/:room", function(req)
  if req.headers["x-deny"] then return { status = 401, json = { error = "who are you?" } } end
  return {
    channel = "room:" .. req.params.room,
    user = req.headers["x-user"],
    on_close = function() closes = closes + 1 end,
  }
end)

-- POST /pub/:room  { event =, data = }  ->  201 { id = <number>, sid = <id as a string> }
app.post("/pub/:room", function(req)
  local ev = req:json()
  local id = app.publish("room:" .. req.params.room, { event = ev.event, data = ev.data })
  return { status = 201, json = { id = id, sid = string.format("%.0f", id) } }
end)

app.post("/badpub", function(req)
  app.publish("room:x", { event = "evil\r\nid: 1", data = "x" })
  return { status = 201, body = "published" }
end)

app.get("/closes", function(req) return { json = { n = closes } } end)
app.get("/ok", function(req) return "ok\n" end)

-- an event id as the production hub numbers them (start time in ms * 1000)
app.get("/bigid", function(req) return { json = { id = 1764226953000123 } } end)
