local app = require "sluice"

app.get("/ok", function(req) return "ok\n" end)
app.get("/boom", function(req) error("kaboom: secret detail") end)
app.get("/boom/table", function(req) error({ status = 422, message = "table error" }) end)
app.get("/teapot", function(req) return 418 end)
app.get("/created", function(req) return 201 end)
app.get("/nothing", function(req) return nil end)
app.get("/badstatus", function(req) return 42 end)
app.get("/badtype", function(req) return true end)
app.get("/badheader", function(req) return { body = "x", headers = { ["x-evil"] = "a\r\nSet-Cookie: pwned=1" } } end)
app.get("/badheadername", function(req) return { body = "x", headers = { ["bad name"] = "v" } } end)
app.get("/badjson", function(req) return { json = { f = print } } end)
app.get("/nanjson", function(req) return { json = { x = 0 / 0 } } end)
app.get("/badbody", function(req) return { body = { 1, 2 } } end)
app.get("/runaway", function(req) while true do end end)
app.get("/runaway/pcall", function(req)
  -- the watchdog's error must not be swallowed into a success by a pcall in the handler
  local ok, err = pcall(function() while true do end end)
  return { json = { caught = not ok, err = tostring(err) } }
end)
app.post("/echo", function(req) return { body = req.body } end)
app.get("/short-sleep", function(req) app.sleep(0.01) return "slept\n" end)

-- background work on the virtual clock
local state = { naps = 0, once = 0, ticks = 0 }
app.post("/nap", function(req)
  local secs = tonumber(req.query.s)
  app.timer(0, function()
    local t0 = app.now()
    state.napping = true
    app.sleep(secs)
    state.napping = false
    state.naps = state.naps + 1
    state.nap_took = app.now() - t0
  end)
  return { status = 202, body = "napping\n" }
end)
app.post("/timers", function(req)
  app.timer(10, function() state.once = state.once + 1 end)
  app.timer(5, function() state.ticks = state.ticks + 1 end, true)
  return { status = 202, body = "armed\n" }
end)
app.get("/state", function(req) return { json = state } end)
app.get("/runaway/twice", function(req)
  pcall(function() while true do end end)
  while true do end   -- a second runaway after the first was caught
end)

-- a request table kept after its request ended (in a global) stays safe to read
local kept
app.get("/keep", function(req) kept = req; return "kept\n" end)
app.get("/kept", function(req)
  if not kept then return 404 end
  return { json = { method = kept.method, path = kept.path, host = kept.headers.host or app.null,
                    query = kept.query, body = kept.body or app.null } }
end)
