local app = require "sluice"
app.get("/ok", function(req) return "ok\n" end)
app.sse("/events", function(req) return { channel = "quiet" } end)
app.get("/boom", function(req)
  local cfg = nil
  return cfg.missing -- MARK:boom
end)
