local app = require "sluice"

app.get("/hello", function(req) return "hello world\n" end)
app.get("/json", function(req) return { json = { ok = true, id = 1, name = "x" } } end)
app.get("/items/:id", function(req) return { json = { id = req.params.id, q = req.query } } end)
app.post("/echo", function(req) return { status = 201, body = req.body } end)
app.get("/sleep", function(req) app.sleep(0.05) return "slept\n" end)
app.get("/boom", function(req) error("kaboom") end)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room, user = req.headers["x-user"] } end)
app.post("/rooms/:room/messages", function(req)
  local id = app.publish("room:" .. req.params.room, { event = "message", data = req.body })
  return { status = 201, json = { id = id } }
end)
