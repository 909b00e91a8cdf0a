local app = require "sluice"

local holding = false

-- starts a background task that holds the only connection for 4 s of real time: far longer than
-- the 1 s pool_timeout a waiter must fail after, even with a loaded machine's delays on top
app.post("/hold", function(req)
  app.timer(0, function()
    holding = true
    app.db.query("select pg_sleep(4)")
    holding = false
  end)
  return { status = 202, body = "holding\n" }
end)
app.get("/holding", function(req) return { json = { holding = holding } } end)

app.get("/one", function(req) return { json = app.db.query("select 1 as one")[1] } end)

app.get("/one/caught", function(req)
  local ok, err = pcall(app.db.query, "select 1 as one")
  if ok then return { json = { ok = true } } end
  return { status = 503, json = { code = err.code, message = err.message } }
end)
