local app = require "sluice"

app.static("/s", "public")

app.get("/ok", function(req) return "ok\n" end)
app.get("/id", function(req) return { json = { id = req.id } } end)
app.get("/cookies", function(req) return { json = req.cookies } end)

app.get("/setcookies", function(req)
  return {
    body = "set",
    cookies = {
      { name = "a", value = "1", path = "/" },
      { name = "b", value = "two", httponly = true, max_age = 60, samesite = "Lax", secure = true },
    },
  }
end)

local bad = {
  semi = { name = "c", value = "x;Domain=evil.example" },
  crlf = { name = "c", value = "x\r\nSet-Cookie: evil=1" },
  attr = { name = "c", value = "x", path = "/;Domain=evil.example" },
  name = { name = "c d", value = "x" },
}
app.get("/badcookie/:kind", function(req)
  return { body = "should not be sent", cookies = { bad[req.params.kind] } }
end)

-- middleware
app.before("/admin", function(req)
  if req.headers["x-token"] ~= "letmein" then
    return { status = 401, json = { error = "token required" } }
  end
end)
app.before("/explode", function(req) error("before hook failed") end)
app.after(function(req, res)
  res.headers["x-after"] = "1"
  return res
end)
app.get("/admin/panel", function(req) return "panel\n" end)
app.get("/administrator", function(req) return "not under /admin\n" end)
app.get("/explode/x", function(req) return "never\n" end)

app.post("/form", function(req) return { json = req.form } end)

app.post("/upload", function(req)
  local parts, err = req:multipart()
  if not parts then return { status = 400, json = { error = err } } end
  return { json = parts }
end)

app.get("/go", function(req) return app.redirect("/target") end)
app.get("/gone", function(req) return app.redirect("/elsewhere", 301) end)
app.get("/missing", function(req) app.error(404, "no such thing") end)
app.get("/boom", function(req) error("kaboom") end)

app.get("/big", function(req)
  local items = {}
  for i = 1, 500 do items[i] = { id = i, name = "item number " .. i, tags = { "a", "b", "c" } } end
  return { json = items }
end)
app.get("/small", function(req) return { json = { ok = true } } end)
app.get("/xss", function(req) error("<script>alert(1)</script> & more", 0) end)
