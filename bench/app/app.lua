-- app.lua for bench/http.sh: the same two routes as bench/nginx/nginx.conf.
local app = require "sluice"

local n = 0

app.get("/hello", function(req) return "hello world\n" end)

app.get("/json", function(req)
  n = n + 1
  return { json = { ok = true, id = n, name = "x" } }
end)
