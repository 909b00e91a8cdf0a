local app = require "sluice"

app.get("/ok", function() return "ok\n" end)

app.get("/page", function(req)
  return app.render("page", { title = req.query.title, items = { "one", "<two>" }, html = "<em>trusted</em>" })
end)

app.get("/status", function() return app.render("page", { title = "gone", items = {} }, 410) end)
app.get("/missing", function() return app.render("nope", {}) end)
app.get("/broken", function() return app.render("broken", {}) end)
app.get("/db", function()
  -- a template may call what handlers call, including what yields (here a sleep)
  return app.render("slow", { wait = function() app.sleep(0.01); return "waited" end })
end)
