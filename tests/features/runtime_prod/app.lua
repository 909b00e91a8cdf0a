local app = require "sluice"
app.get("/ok", function(req) return "ok\n" end)
app.get("/boom", function(req) error("kaboom: password=hunter2") end)
app.get("/missing", function(req) app.error(404, "no such item") end)
app.get("/unavailable", function(req) app.error(503, "replica db-7 is down: secret") end)
app.get("/badheader", function(req) return { body = "x", headers = { ["x-a"] = "a\nb" } } end)
