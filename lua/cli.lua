-- cli: the Lua side of `sluice routes` and `sluice new` (core/cli.c runs them).
local M = {}

---------------------------------------------------------------------------------------------
-- sluice routes: the route table with the rate-limit policy each route falls under
---------------------------------------------------------------------------------------------

local function segments(p)
  local t = {}
  for s in p:gmatch("[^/]+") do t[#t + 1] = s end
  return t
end

-- Can some request to `pattern` fall under a policy path more specific than the pattern's own
-- literal part? ("/items/:id" and a policy on "/items/special": yes.)
local function reaches(pattern, ppath)
  local ps, qs = segments(pattern), segments(ppath)
  for i, q in ipairs(qs) do
    local p = ps[i]
    if p == nil then return false end
    if p == "*" then return true end
    if p:sub(1, 1) ~= ":" and p ~= q then return false end
  end
  return true
end

local function describe_policy(name, pol)
  if not name then return "none" end
  local key = pol.key_kind == "function" and "a function" or tostring(pol.key or "ip")
  local burst = pol.burst and pol.burst ~= pol.limit and (", burst " .. pol.burst) or ""
  return ("%s (%d per %g s by %s%s)"):format(name, pol.limit, pol.window, key, burst)
end

local function policy_of(config, cfg, pattern, method)
  local name, pol = config.match_policy(cfg, pattern, method ~= "*" and method or nil)
  local out = describe_policy(name, pol)
  local own = 0
  for _, r in ipairs(config.policy_routes(cfg)) do
    if r.policy == name and (pattern == r.path or pattern:sub(1, #r.path) == r.path) then own = math.max(own, #r.path) end
  end
  local extra = {}
  local builtin = { ["/health"] = true, ["/ready"] = true, ["/metrics"] = true }
  for _, r in ipairs(config.policy_routes(cfg)) do
    local for_method = r.methods == nil or method == "*"
    for _, m in ipairs(r.methods or {}) do if m == method then for_method = true end end
    if r.policy ~= name and #r.path > own and r.path ~= "/" and for_method and not builtin[r.path]
       and reaches(pattern, r.path) then
      extra[#extra + 1] = r.path .. ": " .. r.policy
    end
  end
  if #extra > 0 then out = out .. "; " .. table.concat(extra, ", ") end
  return out
end

-- routes(base) prints the table for the state's loaded scripts; base = config.lua's directory.
function M.routes(base)
  local app = require "sluice"
  local config = require "config"
  local cfg = app.config
  local rows = { { "METHOD", "PATH", "DEFINED AT", "RATE LIMIT" } }
  local function rel(f)
    if f and base and f:sub(1, #base + 1) == base .. "/" then return f:sub(#base + 2) end
    return f or "?"
  end
  local builtin = { ["/health"] = true, ["/ready"] = true, ["/metrics"] = true }
  for _, r in ipairs(app.routes()) do
    local method = r.kind == "sse" and "SSE" or r.method
    local limit
    if r.kind == "sse" then limit = "never counted (SSE stream)"
    else limit = policy_of(config, cfg, r.pattern, r.method) end
    local note = ""
    if r.kind == "static" then note = "  [static files from " .. r.dir .. "/]" end
    if builtin[r.pattern] or r.pattern == "/_sluice" or r.pattern:sub(1, 9) == "/_sluice/" then
      note = note .. "  [never reached: a built-in endpoint has this path]"
    end
    rows[#rows + 1] = { method, r.pattern, rel(r.file) .. ":" .. tostring(r.line), limit .. note }
  end
  if #rows == 1 then rows[#rows + 1] = { "-", "(no routes: the scripts define none)", "", "" } end
  local built = {
    { "GET", "/health", "built in", policy_of(config, cfg, "/health", "GET") },
    { "GET", "/ready", "built in", policy_of(config, cfg, "/ready", "GET") },
    { "GET", "/metrics", "built in", policy_of(config, cfg, "/metrics", "GET") },
    { "GET", "/_sluice/", "built in (admin)", policy_of(config, cfg, "/_sluice/", "GET") },
  }
  if cfg.sse and cfg.sse.publish_token then
    built[#built + 1] = { "POST", cfg.sse.publish_path, "built in (publish)", policy_of(config, cfg, cfg.sse.publish_path, "POST") }
  end
  local w = { 0, 0, 0 }
  for _, t in ipairs({ rows, built }) do
    for _, r in ipairs(t) do
      for i = 1, 3 do w[i] = math.max(w[i], #r[i]) end
    end
  end
  local function line(r)
    return ("%-" .. w[1] .. "s  %-" .. w[2] .. "s  %-" .. w[3] .. "s  %s"):format(r[1], r[2], r[3], r[4]):gsub("%s+$", "")
  end
  for _, r in ipairs(rows) do print((line(r))) end
  print("")
  for _, r in ipairs(built) do print((line(r))) end
  print("")
  print("HEAD is answered by the GET route of the same path. A request falls under the policy with the longest")
  print("matching path prefix (docs/rate-limiting.md); SSE streams are never counted.")
  return 0
end

---------------------------------------------------------------------------------------------
-- sluice new DIR: a project that runs and whose specs pass at once
---------------------------------------------------------------------------------------------

local FILES = {
  { "config.lua", [[
-- config.lua: this app's policy knobs (every key, its default and range: docs/config.md).
return {
  port = 5000,                          -- PORT in the environment overrides it
  workers = "auto",                     -- one per core
  scripts = { "scripts/app.lua" },      -- handler scripts, relative to this file
  ratelimit = {                         -- named policies: the longest matching path prefix wins
    api = { limit = 1000, window = 900, paths = { "/" } },
    writes = { limit = 60, window = 60, paths = { "/" }, methods = { "POST", "PUT", "PATCH", "DELETE" } },
    monitoring = { limit = 300, window = 60, paths = { "/metrics", "/health", "/ready" } },
  },
  database = { url = os.getenv("DATABASE_URL") },  -- postgresql://user:pass@host:5432/db?connection_limit=20
}
]] },
  { "scripts/app.lua", [[
-- scripts/app.lua: the routes (the Lua API: docs/lua-api.md). `sluice run --watch` reloads on save.
local app = require "sluice"

-- An HTML page from templates/index.html; <%= %> in it escapes what it prints.
app.get("/", function(req)
  return app.render("index", { name = req.query.name or "world" })
end)

-- JSON in, JSON out.
app.post("/echo", function(req)
  local body = req:json()                -- nil, message for a body that is not JSON
  if type(body) ~= "table" then
    return { status = 400, json = { error = "send a JSON object" } }
  end
  return { status = 201, json = { echo = body } }
end)

-- With DATABASE_URL set and `sluice migrate` run: the notes table from migrations/001_init.sql.
app.get("/notes", function(req)
  if not app.db.configured() then
    return { status = 503, json = { error = "no database: set DATABASE_URL and run sluice migrate" } }
  end
  return { json = app.array(app.db.query("select id, body from notes order by id")) }
end)
]] },
  { "templates/index.html", [[
<!doctype html>
<meta charset="utf-8">
<title>Hello</title>
<h1>Hello, <%= name %>!</h1>
<p>Edit <code>scripts/app.lua</code> and <code>templates/index.html</code>, then reload.</p>
]] },
  { "tests/app_spec.lua", [[
-- tests/app_spec.lua: run with `sluice test` (docs/testing.md). request() goes through the real
-- HTTP stack of a test instance of this app.
describe("app", function()
  it("greets, escaping what it prints", function()
    local res = request("GET", "/?name=<you>")
    assert.are.equal(200, res.status)
    assert.are.equal("text/html; charset=utf-8", res.headers["content-type"])
    assert.matches("Hello, &lt;you&gt;!", res.body, 1, true)
  end)

  it("echoes JSON and refuses what is not", function()
    local res = request("POST", "/echo", { json = { a = 1 } })
    assert.are.equal(201, res.status)
    assert.are.same({ echo = { a = 1 } }, res:json())
    assert.are.equal(400, request("POST", "/echo", { body = "nope" }).status)
  end)
end)
]] },
  { "migrations/001_init.sql", [[
-- 001_init.sql: the first table. `sluice migrate` applies each file once, in name order, in a
-- transaction of its own; `sluice migrate new NAME` creates the next one. Never edit an applied file.
create table notes (
  id         bigserial   primary key,
  body       text        not null,
  created_at timestamptz not null default now()
);
]] },
  { ".gitignore", [[
# sluice's local state (a development PostgreSQL started by tools/pg-dev, logs)
.sluice/
*.log
]] },
}

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- new(dir) creates the project; 0, or 1 with a message on stderr.
function M.new(dir)
  if not dir or dir == "" then
    io.stderr:write("usage: sluice new DIR   (creates DIR with a runnable app: config.lua, scripts/, templates/, tests/, migrations/)\n")
    return 2
  end
  local p = io.popen("ls -A " .. shq(dir) .. " 2>/dev/null")
  local existing = p and p:read("*a") or ""
  if p then p:close() end
  if existing:match("%S") then
    io.stderr:write("sluice new: ", dir, " exists and is not empty; give a new directory name\n")
    return 1
  end
  for _, f in ipairs(FILES) do
    local path = dir .. "/" .. f[1]
    local sub = path:match("^(.*)/[^/]+$")
    if os.execute("mkdir -p " .. shq(sub)) ~= 0 then
      io.stderr:write("sluice new: cannot create ", sub, "\n")
      return 1
    end
    local fh, err = io.open(path, "wb")
    if not fh then io.stderr:write("sluice new: ", err, "\n"); return 1 end
    fh:write(f[2])
    fh:close()
  end
  local names = {}
  for i, f in ipairs(FILES) do names[i] = f[1] end
  io.stdout:write("created ", dir, "/: ", table.concat(names, ", "), "\n\n",
                  "next:\n",
                  "  cd ", dir, "\n",
                  "  sluice test                     # the specs in tests/: 2 passed, 0 failed\n",
                  "  sluice run --watch              # http://localhost:5000/ (reloads on save)\n",
                  "  sluice routes                   # what answers which path, under which rate limit\n",
                  "  DATABASE_URL=postgresql://user:pass@127.0.0.1:5432/db sluice migrate\n")
  return 0
end

-- `sluice migrate new NAME [dir]` (args as given after "migrate"): files only, in a plain state.
function M.migrate_new(...) return require("migrate")({ ... }) end

return M
