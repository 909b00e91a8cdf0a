-- The handlers of tests/adversarial/faults.py: ordinary routes whose answers the suite checks
-- (each names its input, so a wrong or crossed answer shows), and hostile ones.
local app = require "sluice"

app.get("/hello", function() return "hello world\n" end)
local big = string.rep("x", 8192)
app.get("/big", function() return big end)
app.post("/echo", function(req) return "got " .. #req.body .. "\n" end)

-- the database: n + 1, computed by PostgreSQL
app.get("/db", function(req)
  local n = tonumber(req.query.n) or 0
  return { json = { n = app.db.query("select $1::int + 1 as n", n)[1].n } }
end)
-- a query that runs s seconds (over the configured statement_timeout, or holding a connection)
app.get("/db/sleep", function(req)
  app.db.query("select pg_sleep($1)", tonumber(req.query.s) or 1)
  return { json = { slept = true } }
end)

-- the rate limiter (policy "lim", counted in Redis) in front of a plain answer
app.get("/limited", function(req) return "limited " .. (req.query.k or "") .. "\n" end)

-- the cache (Redis): set then get; failures never raise, they are reported
app.get("/cache", function(req)
  local k = "k" .. (req.query.k or "0")
  local ok, err = app.cache.set(k, k .. "-v", 60)
  local v, gerr = app.cache.get(k)
  return { json = { set = ok or false, value = v or app.null, err = tostring(err or gerr or "") } }
end)

-- SSE: a room per channel, and publishing into it (201 with the id)
app.sse("/events/:room", function(req) return { channel = "room:" .. req.params.room } end)
app.post("/pub/:room", function(req)
  local id = app.publish("room:" .. req.params.room, { event = "msg", data = req.body })
  return { status = 201, json = { id = id } }
end)

-- hostile handlers
-- a busy loop the guard stops with the JIT on (a pattern match leaves compiled code); a loop whose
-- trace never exits ends the process instead (status 70: tests/integration/test_lua_jit_guard.py)
app.get("/h/loop", function() local n, s = 0, "k=v" while true do if s:find("(%w+)=(%w+)") then n = n + 1 end end end)
app.get("/h/rep", function() local s = string.rep("x", 2 ^ 30) return tostring(#s) end)
app.get("/h/bigerror", function() error(string.rep("E", 8 * 1024 * 1024)) end)
app.get("/h/function", function() return function() end end)
app.get("/h/boolean", function() return true end)
app.get("/h/userdata", function() return io.stdout end)
app.get("/h/pcall-yield", function()
  local ok, err = pcall(function() app.sleep(0.01) return "slept" end)
  return { json = { ok = ok, result = tostring(err) } }
end)
app.get("/h/coroutine-yield", function()
  local co = coroutine.wrap(function() app.sleep(0.01) return "inner" end)
  return tostring(co())
end)
app.get("/h/exit", function() os.exit(3) end)
app.get("/h/sleep-forever", function() while true do app.sleep(3600) end end)
app.get("/h/status101", function() return { status = 101 } end)
app.get("/h/crlf", function()
  return { headers = { ["x-a"] = "ok\r\nX-Injected: 1" }, body = "split\n" }
end)
