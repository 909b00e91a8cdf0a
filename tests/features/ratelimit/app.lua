local app = require "sluice"

app.get("/api/items", function(req) return { json = { ok = true } } end)
app.get("/api/deep/x", function(req) return "deep\n" end)
app.get("/apiary", function(req) return "bees\n" end)
app.get("/partner", function(req) return "partner\n" end)
app.get("/tenant", function(req) return "tenant\n" end)
app.get("/open", function(req) return "open\n" end)
app.get("/api/ip", function(req) return { json = { ip = req.ip } } end)
app.sse("/api/events/:room", function(req) return { channel = "rl:" .. req.params.room } end)
