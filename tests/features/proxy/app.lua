local app = require "sluice"
app.get("/api/ip", function(req) return { json = { ip = req.ip, id = req.id } } end)
app.get("/ok", function(req) return "ok\n" end)
