-- app.lua for bench/toolkit.sh: bench/app's /json route, the same route behind a JWT HS256
-- bearer check (/jwtc: verified-token cache on; /jwtn: off), /hello, and a login that verifies a
-- password. The JWT routes' paths are as long as "/json", so parsing and routing the request
-- cost the same and the difference is the check alone.
local app = require "sluice"

local n = 0
local KEY = app.crypto.secret(os.getenv("BENCH_JWT_SECRET") or "bench-secret-of-at-least-thirty-two-bytes")
local OPTS = app.jwt.options({ aud = "api", algs = { "HS256" } })
local NOCACHE = app.jwt.options({ aud = "api", algs = { "HS256" }, cache = false })

app.get("/hello", function(req) return "hello world\n" end)

app.get("/json", function(req)
  n = n + 1
  return { json = { ok = true, id = n, name = "x" } }
end)

app.get("/jwtc", function(req)
  local claims = app.jwt.verify_bearer(req, KEY, OPTS)
  if not claims then return 401 end
  n = n + 1
  return { json = { ok = true, id = n, name = "x" } }
end)

app.get("/jwtn", function(req)
  local claims = app.jwt.verify_bearer(req, KEY, NOCACHE)
  if not claims then return 401 end
  n = n + 1
  return { json = { ok = true, id = n, name = "x" } }
end)

local STORED = app.password.hash("the password")
app.post("/login", function(req)
  return app.password.verify(req.body, STORED) and 200 or 401
end)
