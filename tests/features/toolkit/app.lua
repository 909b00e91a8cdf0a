-- The handler toolkit through the real stack: password hashing off the loop, JWT-protected
-- routes and SSE streams, validation answered with app.error(422, errors), sessions, CSRF and
-- webhook signatures. Runs with tests/features/toolkit/config.lua.
local app = require "sluice"
local V = dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "vectors.lua")

-- hashed while the scripts load: no task to suspend, so it runs inline
local LOAD_HASH = app.password.hash("at load time")

app.get("/ok", function() return "ok\n" end)
app.get("/load-hash", function() return { json = { hash = LOAD_HASH, ok = app.password.verify("at load time", LOAD_HASH) } } end)

app.post("/hash", function(req)
  local h, err = app.password.hash(req:json().pw)
  if not h then return { status = 503, json = { error = err } } end
  return { json = { hash = h } }
end)

app.post("/verify", function(req)
  local b = req:json()
  return { json = { ok = app.password.verify(b.pw, b.hash), rehash = app.password.needs_rehash(b.hash) } }
end)

-- several hashes from one handler, one after the other (each waits, the worker does not)
app.post("/hash-many", function(req)
  local out = {}
  for i = 1, req:json().n do out[i] = app.password.hash("pw" .. i) end
  return { json = { hashes = out } }
end)

-- a coroutine the handler made itself cannot be suspended by the pool: a clear error
app.get("/hash-in-coroutine", function()
  local co = coroutine.create(function() return app.password.hash("x") end)
  local ok, err = coroutine.resume(co)
  return { json = { ok = ok, err = tostring(err) } }
end)

-- JWT: HS256 API tokens
local API_KEY = app.crypto.secret(V.secret)
app.post("/token", function(req)
  local b = req:json()
  return { json = { token = app.jwt.sign({ sub = b.sub, aud = "api" }, API_KEY, { expires_in = b.ttl or 60 }) } }
end)
app.get("/me", function(req)
  local token = app.jwt.bearer(req)
  if not token then return { status = 401, json = { error = "bearer token required" } } end
  local claims, why = app.jwt.verify(token, API_KEY, { aud = "api" })
  if not claims then return { status = 401, json = { error = why } } end
  return { json = { sub = claims.sub } }
end)

app.get("/me-bearer", function(req)
  local claims, why = app.jwt.verify_bearer(req, API_KEY, { aud = "api" })
  if not claims then return { status = 401, json = { error = why } } end
  return { json = { sub = claims.sub } }
end)
-- verify_bearer with an options object: a token verified before is answered by the C cache
-- (app.jwt.cache_stats counts the hits); the key can be rotated by POST /rotate-key
local SEALED = app.jwt.options({ aud = "api", leeway = 10 })
local current_key = API_KEY
app.get("/me-sealed", function(req)
  local claims, why = app.jwt.verify_bearer(req, current_key, SEALED)
  if not claims then return { status = 401, json = { error = why } } end
  return { json = { sub = claims.sub, hits = app.jwt.cache_stats(SEALED).hits } }
end)
app.post("/rotate-key", function(req)
  current_key = req.body == "" and API_KEY or app.crypto.secret(req.body)
  return 204
end)

-- a JWK set whose keys the specs rotate (POST /jwks-rotating.json with the new set)
local rotating = { keys = {} }
app.get("/jwks-rotating.json", function() return { json = rotating } end)
app.post("/jwks-rotating.json", function(req) rotating = req:json(); return 204 end)
app.get("/header", function(req)
  return { json = { thing = req:header("X-Thing") or app.null, missing = req:header("x-missing") or app.null } }
end)

-- the public half of the RFC keys, as a JWK set endpoint
app.get("/jwks.json", function() return { json = { keys = { V.rsa_public, V.ec_public, V.ed_public } } } end)

-- Mercure-style SSE authorization: a JWT in "Authorization: Bearer" (non-browser clients) or the
-- mercureAuthorization cookie (EventSource), with the topics it may read in claims.mercure.subscribe
app.sse("/hub/:topic", function(req)
  local token = app.jwt.bearer(req) or req.cookies.mercureAuthorization
  if not token then return { status = 401, json = { error = "subscriber token required" } } end
  local claims, why = app.jwt.verify(token, API_KEY, { algs = { "HS256" }, aud = "hub" })
  if not claims then return { status = 401, json = { error = why } } end
  local topics = type(claims.mercure) == "table" and type(claims.mercure.subscribe) == "table" and claims.mercure.subscribe or {}
  local allowed = false
  for _, t in ipairs(topics) do if t == "*" or t == req.params.topic then allowed = true end end
  if not allowed then return { status = 403, json = { error = "topic not in the token's mercure.subscribe" } } end
  return { channel = "topic:" .. req.params.topic, user = claims.sub }
end)
app.post("/hub/:topic", function(req)
  return { status = 201, json = { id = app.publish("topic:" .. req.params.topic, { event = "update", data = req.body }) } }
end)

-- validation
local ITEM = {
  fields = {
    name = { type = "string", required = true, min_length = 1, max_length = 20, trim = true },
    email = { type = "string", format = "email" },
    age = { type = "integer", min = 0, max = 150 },
    role = { type = "string", enum = { "admin", "member" }, default = "member" },
    tags = { type = "array", max_items = 3, items = { type = "string", max_length = 5 }, unique = true },
    address = { type = "object", fields = {
      city = { type = "string", required = true },
      zip = { type = "string", pattern = "^%d%d%d%d%d$" },
    } },
    password = { type = "string", check = function(v) if #v < 8 then return "must be at least 8 characters" end end },
  },
}
app.post("/items", function(req)
  local body, err = req:json()
  if body == nil then app.error(400, err) end
  local item, errors = app.validate(ITEM, body)
  if not item then app.error(422, errors) end
  return { status = 201, json = item }
end)

-- sessions (app.cache store, signed cookie ids) and CSRF
app.post("/login", function(req)
  local sid, cookie = app.session.save(nil, { user = req:json().user })
  return { json = { sid = sid }, cookies = { cookie } }
end)
app.get("/session", function(req)
  local data, sid = app.session.load(req)
  return { json = { user = data.user, sid = sid } }
end)
app.post("/logout", function(req)
  local _, sid = app.session.load(req)
  return { status = 204, cookies = { app.session.destroy(sid) } }
end)

app.get("/form", function(req)
  local token, cookie = app.csrf.token(req)
  return { json = { token = token }, cookies = { cookie } }
end)
app.csrf.protect("/forms")
app.post("/forms/submit", function(req) return { json = { done = true } } end)
app.get("/forms/view", function(req) return { json = { viewed = true } } end)

-- webhooks signed the Stripe/GitHub way
local HOOK_SECRET = "whsec_test_secret"
app.post("/webhook", function(req)
  local ok, why = app.crypto.webhook.verify(HOOK_SECRET, req.body, req.headers["x-signature"])
  if not ok then return { status = 400, json = { error = why } } end
  return { json = { received = true } }
end)

-- app.log with fields from a handler (the line's content is checked by test_toolkit.py)
app.get("/log", function(req)
  app.log("warn", "structured", { user = "ann", n = 3 })
  return { json = { trace_id = req.trace_id, traceparent = req.traceparent, route = req.route } }
end)
app.get("/badlog", function(req)
  app.log("warn", "bad", { f = print })
  return "unreachable"
end)
-- trace context passed on: an outbound call to this same instance echoes the traceparent it got
app.get("/echo-traceparent", function(req) return { json = { got = req.headers.traceparent or app.null } } end)
app.get("/outbound", function(req)
  local url = "http://127.0.0.1:" .. req.query.port .. "/echo-traceparent"
  local res, err = app.http.get(url)
  if not res then return { status = 502, json = { error = err } } end
  local own, err2 = app.http.get(url, { headers = { traceparent = "00-11111111111111111111111111111111-2222222222222222-01" } })
  if not own then return { status = 502, json = { error = err2 } } end
  return { json = { trace_id = req.trace_id, span_id = req.span_id, sent = res:json().got, own = own:json().got } }
end)
app.get("/items/:id/trace", function(req) return { json = { trace_id = req.trace_id, span_id = req.span_id, route = req.route } } end)
