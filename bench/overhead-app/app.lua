-- app.lua for bench/overhead.sh: the /hello route of bench/app/app.lua, nothing else.
local app = require "sluice"

app.get("/hello", function(req) return "hello world\n" end)
