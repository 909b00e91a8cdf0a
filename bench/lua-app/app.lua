-- app.lua for bench/lua.sh: the three routes of bench/nginx/lua.conf, doing work.lua's work.
local app = require "sluice"
local work = require "work"

local n = 0
app.get("/sort", function() n = n + 1; return work.sort(n % 1000) end)
app.post("/text", function(req) return work.text(req.body) end)
local JSON = { ["content-type"] = "application/json" }
app.post("/json", function(req) return { body = work.json(req.body), headers = JSON } end)
