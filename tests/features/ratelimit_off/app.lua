local app = require "sluice"
app.get("/api/items", function(req) return { json = { ok = true } } end)
