-- sluice: the Lua API handler scripts see as `require "sluice"` (sugar over the C primitives
-- in sluice.core). Misuse raises; database failures raise error tables { sqlstate, message, code }.
local core = require "sluice.core"
local cjson = require "cjson"

local app = {}
app.config = core.config()
-- app.json: cjson's decode, and an encoder that keeps integers up to 2^53 (and beyond, up to
-- 2^63) exact and other numbers in their shortest round-trip form.
app.json = setmetatable({ encode = core.json_encode }, { __index = cjson })

-- app.array(t): marks t to be encoded as a JSON array even when empty ({} is an object).
local array_mt = { __jsontype = "array" }
function app.array(t) return setmetatable(t or {}, array_mt) end
app.empty_array = app.array({})
app.null = cjson.null

-- Load-time mistakes are reported at the user's line, never at a line of this file: raise(msg,
-- level) is error() with level counted as error() counts it, the location taken from the full
-- script path (as Lua reports syntax errors), and internal positions stripped from core messages.
local function location(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info or (info.currentline or -1) < 0 then return "" end
  local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
  return src .. ":" .. info.currentline
end

local function raise(msg, level)
  error(location((level or 1) + 1) .. ": " .. tostring(msg):gsub("^[^\n:]*:%d+: ", ""), 0)
end

-- A module found nowhere: one line at the script's line saying what to do, instead of require's
-- list of every file it tried (of which only the first line, naming nothing, would be shown).
package.loaders[#package.loaders + 1] = function(name)
  return function()
    raise(("module '%s' not found: put %s.lua in scripts/ or next to config.lua, or install it "
           .. "(a Debian lua-* package or a pure-Lua rock for Lua 5.1; see docs/lua-api.md, \"Lua modules\")")
          :format(name, (name:gsub("%.", "/"))), 3)
  end
end

-- The route table in definition order, for `sluice routes` and app.routes().
local routes, route_at = {}, {}
local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true, DELETE = true, OPTIONS = true, ["*"] = true, ANY = true }

-- Adds a route; `level` is the stack level of the user's call (as for error()).
local function add_route(method, pattern, fn, kind, level)
  level = level + 1
  local what = kind == "sse" and "app.sse" or method == nil and "app.route" or ("app." .. tostring(method):lower())
  if type(method) ~= "string" or not METHODS[method:upper()] then
    raise(("app.route: unknown method %s (use GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD or \"*\" for any)")
      :format(type(method) == "string" and ("\"" .. method .. "\"") or tostring(method)), level)
  end
  method = method:upper() == "ANY" and "*" or method:upper()
  if type(pattern) ~= "string" then
    raise(what .. ": the route pattern must be a string such as \"/items/:id\" (got " .. type(pattern) .. ")", level)
  end
  if type(fn) ~= "function" then
    raise(what .. "(\"" .. pattern .. "\", fn): " .. (kind == "sse" and "the authorizer" or "the handler")
          .. " must be a function (got " .. type(fn) .. ")", level)
  end
  -- one handler per method and pattern (parameter names do not count: "/u/:id" is "/u/:name")
  local key = method .. " " .. pattern:gsub(":[^/]*", ":")
  local here = location(level)
  if route_at[key] then
    raise(("duplicate route %s %s: %s %s is already defined at %s (one handler per method and path: remove one, or change its path or method)")
      :format(method, pattern, route_at[key].method, route_at[key].pattern, route_at[key].where), level)
  end
  local ok, err = pcall(core.route, method, pattern, fn, kind)
  if not ok then raise(err, level) end
  local file, line = here:match("^(.*):(%d+)$")
  local r = { method = method, pattern = pattern, kind = kind or "handler", file = file, line = tonumber(line), where = here }
  routes[#routes + 1] = r
  route_at[key] = r
end

local function route(method)
  return function(pattern, fn) add_route(method, pattern, fn, nil, 2) end
end

app.get = route("GET")
app.post = route("POST")
app.put = route("PUT")
app.patch = route("PATCH")
app.delete = route("DELETE")
app.options = route("OPTIONS")

function app.route(method, pattern, fn) add_route(method, pattern, fn, nil, 2) end

-- app.sse(pattern, fn): fn(req) returns { channel = "x" | channels = {...}, user = "id" }
-- to accept the subscriber, or { status = 401, json = ... } (any non-200) to refuse.
function app.sse(pattern, fn) add_route("GET", pattern, fn, "sse", 2) end

-- app.routes() -> a copy of the route table in definition order: { method, pattern, kind
-- ("handler", "sse" or "static"), file, line, dir (static) }.
function app.routes()
  local out = {}
  for i, r in ipairs(routes) do
    local c = {}
    for k, v in pairs(r) do c[k] = v end
    out[i] = c
  end
  return out
end

-- app.publish(channel, { event =, data =, id =, retry = }) -> event id.
-- Table data is sent as JSON; multi-line data becomes several data: lines.
function app.publish(channel, ev)
  if type(channel) ~= "string" then error("app.publish: channel must be a string", 2) end
  if type(ev) ~= "table" then ev = { data = ev } end
  local data = ev.data
  if type(data) == "table" then data = core.json_encode(data)
  elseif data ~= nil then data = tostring(data) end
  local id = ev.id and tostring(ev.id) or nil
  -- With Redis configured this waits for the cluster-wide id (every instance delivers the event).
  local res, err, code = core.publish(channel, data or "", ev.event, id, ev.retry)
  if res == nil and code == "unreachable" then
    -- the bus cannot take the event (Redis down or too slow): an error table like the database's,
    -- so an uncaught one answers 503 with Retry-After; pcall it to decide yourself
    error({ code = "unreachable", message = "app.publish: " .. err }, 2)
  end
  if res == nil and err and err ~= "SSE is not running" then error("app.publish: " .. err, 2) end
  return res, err
end

-- app.static(prefix, dir [, { cache_control =, index = }]): files under dir, served by the C core
-- (sendfile, ETag/Last-Modified/304, Range, .gz siblings, never outside dir).
function app.static(prefix, dir, opts)
  opts = opts or {}
  if type(prefix) ~= "string" or prefix:sub(1, 1) ~= "/" then
    raise("app.static(prefix, dir): prefix must be a path starting with '/', e.g. \"/assets\" (got " .. tostring(prefix) .. ")", 2)
  end
  if type(dir) ~= "string" then raise("app.static(prefix, dir): dir must be a directory name, e.g. \"public\" (got " .. type(dir) .. ")", 2) end
  local ok, err = pcall(core.static, prefix, dir, opts.cache_control, opts.index)
  if not ok then
    err = tostring(err)
    if err:find("cannot open directory", 1, true) then
      err = err .. " (create it, or give a path relative to config.lua's directory)"
    end
    raise(err, 2)
  end
  local here = location(2)
  local file, line = here:match("^(.*):(%d+)$")
  local pat = (prefix:gsub("/+$", "")) .. "/*"
  routes[#routes + 1] = { method = "GET", pattern = pat, kind = "static", dir = dir, file = file, line = tonumber(line), where = here }
  route_at["GET " .. pat] = routes[#routes]
end

-- HTML templates (lua/template.lua): app.render(name, data [, status]) -> a text/html response
-- from templates/<name>.html; app.render_string(name, data) -> the HTML. Escaped by default.
local template
local function render(name, data, level)
  template = template or require "template"
  local ok, html = pcall(template.render, app.config.templates or "templates", name, data)
  if not ok then
    if type(html) == "string" and html:match("^[^\n:]+:%d+: ") then error(html, 0) end  -- the template's line
    raise(html, level + 1)                                                            -- the caller's line
  end
  return html
end

function app.render(name, data, status)
  return { status = status or 200, headers = { ["content-type"] = "text/html; charset=utf-8" }, body = render(name, data, 2) }
end

function app.render_string(name, data) return render(name, data, 2) end

-- Middleware. app.before([prefix,] fn): fn(req) runs before the handler; returning a
-- response answers early. app.after([prefix,] fn): fn(req, res) runs after it with the
-- response as a table ({ status, headers, body | json }); it may change it or return a new one.
local befores, afters = {}, {}

local function prefix_match(prefix, path)
  if prefix == "/" or path == prefix then return true end
  if path:sub(1, #prefix) ~= prefix then return false end
  return prefix:sub(-1) == "/" or path:sub(#prefix + 1, #prefix + 1) == "/"
end

local function as_table(res)
  local t = type(res)
  if t == "table" then
    res.headers = res.headers or {}
    return res
  end
  if t == "string" then return { status = 200, body = res, headers = { ["content-type"] = "text/plain; charset=utf-8" } } end
  if t == "number" then return { status = res, headers = {} } end
  if res == nil then return { status = 204, headers = {} } end
  return res
end

local function pipeline(handler, req, is_sse)
  local path = req.path
  local res
  for i = 1, #befores do
    local h = befores[i]
    if prefix_match(h.prefix, path) then
      res = h.fn(req)
      if res ~= nil then break end
    end
  end
  if res == nil then res = handler(req) elseif is_sse then return res end
  if is_sse or #afters == 0 then return res end
  res = as_table(res)
  for i = 1, #afters do
    local h = afters[i]
    if prefix_match(h.prefix, path) then
      local r = h.fn(req, res)
      if r ~= nil then res = as_table(r) end
    end
  end
  return res
end

local function add_hook(list, a, b)
  local prefix, fn = a, b
  if type(a) == "function" then prefix, fn = "/", a end
  if type(prefix) ~= "string" or prefix:sub(1, 1) ~= "/" then raise("middleware prefix must start with '/', e.g. app.before(\"/api\", fn) (got " .. tostring(prefix) .. ")", 3) end
  if type(fn) ~= "function" then raise("middleware must be a function (got " .. type(fn) .. ")", 3) end
  list[#list + 1] = { prefix = prefix, fn = fn }
  core.set_pipeline(pipeline)
end

function app.before(a, b) add_hook(befores, a, b) end
function app.after(a, b) add_hook(afters, a, b) end

app.sleep = core.sleep
app.now = core.now
app.worker = core.worker

-- app.timer(seconds, fn [, repeat]): run fn after seconds (every seconds when repeat is true).
function app.timer(seconds, fn, rep)
  if type(seconds) ~= "number" or seconds < 0 then
    raise("app.timer(seconds, fn [, repeat]): seconds must be a number >= 0 (got " .. tostring(seconds) .. ")", 2)
  end
  if type(fn) ~= "function" then raise("app.timer(seconds, fn [, repeat]): fn must be a function (got " .. type(fn) .. ")", 2) end
  local ok, err = pcall(core.timer, seconds, fn, rep)
  if not ok then raise(err, 2) end
end

-- app.log(level, message [, fields]), app.log(level, fmt, ...) or app.log(message). The line names
-- the caller's file:line (so the writes below are not tail calls), and in JSON mode the
-- request's id, route and trace id.
local clog = require "sluice.log"
function app.log(level, fmt, ...)
  if fmt == nil then
    clog.write("info", tostring(level), nil, 2)
    return
  end
  local n = select("#", ...)
  if n == 1 and type((...)) == "table" then
    clog.write(level, tostring(fmt), (...), 2)
    return
  end
  if n > 0 then fmt = string.format(fmt, ...) end
  clog.write(level, tostring(fmt), nil, 2)
end

-- app.redirect(url [, status]) -> response table
function app.redirect(url, status)
  return { status = status or 302, headers = { location = url }, body = "" }
end

-- app.error(status, message [, fields]) -> raises an error that becomes that status with a JSON
-- body { error = message, status = status [, fields = fields] }. app.error(422, errors) with the
-- errors of app.validate answers { error = "validation failed", fields = errors }.
local error_mt = { __tostring = function(e) return tostring(e.message) end }
function app.error(status, message, fields)
  if type(message) == "table" and fields == nil then message, fields = "validation failed", message end
  if message == nil then message = "error" end
  error(setmetatable({ status = status, message = message, fields = fields }, error_mt), 2)
end

-- Database: rows (array of tables; rows.affected for writes) or a raised error table.
local db = {}
app.db = db
local cdb = core.db

-- Misuse (no task, e.g. at load time; a bad parameter) raises from C: reported at the caller's line.
local function misuse(ok, rows, err)
  if not ok then raise(rows, 3) end
  if rows == nil then error(err, 3) end
  return rows
end

-- (not tail calls: misuse counts the frames up to the caller)
function db.query(sql, ...) local rows = misuse(pcall(cdb.query, sql, ...)); return rows end
function db.read(sql, ...) local rows = misuse(pcall(cdb.read, sql, ...)); return rows end

-- app.db.transaction(fn): BEGIN; fn(); COMMIT — or ROLLBACK and re-raise when fn errors.
function db.transaction(fn)
  if type(fn) ~= "function" then raise("app.db.transaction(fn): fn must be a function (got " .. type(fn) .. ")", 2) end
  local pok, ok, err = pcall(cdb.begin)
  if not pok then raise(ok, 2) end
  if not ok then error(err, 2) end
  local res = { pcall(fn) }
  if res[1] then
    local cok, cerr = cdb.commit()
    if not cok then error(cerr, 2) end
    return unpack(res, 2)
  end
  cdb.rollback()
  error(res[2], 0)
end

db.configured = cdb.configured

-- app.db.listen(channel, fn): at load time; fn(payload, channel) runs as a task for each NOTIFY.
function db.listen(channel, fn)
  if type(channel) ~= "string" then raise("app.db.listen(channel, fn): channel must be a string (got " .. type(channel) .. ")", 2) end
  if type(fn) ~= "function" then raise("app.db.listen(channel, fn): fn must be a function (got " .. type(fn) .. ")", 2) end
  local ok, err = pcall(cdb.listen, channel, fn)
  if not ok then raise((tostring(err):gsub("bad argument #1 to '%?' %((.*)%)$", "app.db.listen: channel must be %1")), 2) end
end

-- Outbound HTTP (docs/http-client.md): app.http.request{...}, get/post/put/patch/delete(url, opts),
-- all{...}. The calling task waits; the worker serves others meanwhile. A network failure
-- returns nil, "host: reason", kind; misuse raises. Under `sluice test`, app.http.mock intercepts.
local http = require "sluice.http"
app.http = http
local c_request, c_all, c_response = http.request, http.all, http.response
local header_hooks, mocks, mock_reset_hooked = {}, {}, false

-- app.http.add_header_hook(fn): fn(opts) returns a table of headers added to every outbound
-- request that does not set them itself (W3C traceparent propagation, API keys, ...).
function http.add_header_hook(fn)
  if type(fn) ~= "function" then error("app.http.add_header_hook: expects a function", 2) end
  header_hooks[#header_hooks + 1] = fn
end

-- with_hooks(opts, owned): the options with the hooks' headers added. Returns opts itself when no
-- hook adds a header the call lacks; otherwise one new headers table, set on opts when the caller
-- owns it (owned: a copy made by app.http.get & co.) or on a single shallow copy of opts.
local function has_header(t, lk)
  if t then
    for k in pairs(t) do
      if type(k) == "string" and k:lower() == lk then return true end
    end
  end
  return false
end

local function with_hooks(opts, owned)
  local given = type(opts.headers) == "table" and opts.headers or nil
  local h
  for _, fn in ipairs(header_hooks) do
    local add = fn(opts)
    if type(add) == "table" then
      for k, v in pairs(add) do
        if type(k) == "string" then
          local lk = k:lower()
          -- headers given by the call (or, once h exists, those plus earlier hooks' additions)
          local dup = has_header(h or given, lk)
          if not dup then
            if not h then
              h = {}
              if given then for gk, gv in pairs(given) do h[gk] = gv end end
            end
            h[k] = v
          end
        end
      end
    end
  end
  if not h then return opts end
  local o = opts
  if not owned then
    o = {}
    for k, v in pairs(opts) do o[k] = v end
  end
  o.headers = h
  return o
end

local function find_mock(opts)
  local url = type(opts.url) == "string" and opts.url or ""
  for i = #mocks, 1, -1 do                        -- the latest mock wins
    local m = mocks[i]
    local p = m.pattern
    if (type(p) == "string" and url:find(p, 1, true)) or (type(p) == "function" and p(opts)) then return m end
  end
end

local function mock_answer(m, opts)
  m.calls[#m.calls + 1] = opts
  local r = m.response
  if type(r) == "function" then r = r(opts) end
  if type(r) ~= "table" then error("app.http.mock: the response must be a table or a function returning one", 3) end
  local host = opts.url:match("^%a[%w+.-]*://([^/?#]+)") or opts.url
  host = host:gsub("^.*@", "")
  if r.error then return nil, host .. ": " .. tostring(r.error), r.kind or "other" end
  local headers = {}
  for k, v in pairs(r.headers or {}) do headers[k:lower()] = v end
  local body = r.body or ""
  if r.json ~= nil then
    body = core.json_encode(r.json)
    headers["content-type"] = headers["content-type"] or "application/json"
  end
  return c_response({ status = r.status or 200, headers = headers, body = body, time = 0,
    url = opts.url, http_version = "1.1", mocked = true })
end

local function request(opts, owned)
  if #header_hooks > 0 then opts = with_hooks(opts, owned) end
  if #mocks > 0 then
    local m = find_mock(opts)
    if m then return mock_answer(m, opts) end
  end
  return c_request(opts)
end

function http.request(opts)
  if type(opts) ~= "table" then error("app.http.request: expects a table of options ({ url = ..., method = ... })", 2) end
  return request(opts, false)
end

local function verb(method)
  local name = "app.http." .. method:lower()
  return function(url, opts)
    if type(url) ~= "string" then error(name .. ": url must be a string", 2) end
    if opts ~= nil and type(opts) ~= "table" then error(name .. ": options must be a table", 2) end
    local o = {}
    if opts then for k, v in pairs(opts) do o[k] = v end end
    o.url, o.method = url, method
    return request(o, true)
  end
end
http.get, http.post, http.put = verb("GET"), verb("POST"), verb("PUT")
http.patch, http.delete, http.head = verb("PATCH"), verb("DELETE"), verb("HEAD")

-- app.http.all{ opts1, opts2, ... } -> results, errors: all in flight at once; results[i] is the
-- response or false, errors[i] the message when request i failed.
function http.all(list)
  if type(list) ~= "table" then error("app.http.all: expects an array of request option tables", 2) end
  if #header_hooks == 0 and #mocks == 0 then return c_all(list) end
  local real, at, results, errs = {}, {}, {}, {}
  for i = 1, #list do
    local o = list[i]
    if type(o) ~= "table" then error("app.http.all: request " .. i .. " must be a table of options", 2) end
    if #header_hooks > 0 then o = with_hooks(o) end
    local m = #mocks > 0 and find_mock(o)
    if m then
      local r, e = mock_answer(m, o)
      results[i], errs[i] = r or false, e
    else
      real[#real + 1], at[#at + 1] = o, i
    end
  end
  if #real > 0 then
    local rr, re = c_all(real)
    for k, i in ipairs(at) do results[i], errs[i] = rr[k], re[k] end
  end
  return results, errs
end

-- Specs (`sluice test` only): app.http.mock(pattern, response) answers requests whose URL contains
-- pattern (plain text; or a function(opts) -> true) with response (a table { status, headers,
-- body | json } or { error = "...", kind = "timeout" }, or a function(opts) returning one).
-- Returns the mock; mock.calls lists the options of the requests it answered. Mocks are removed
-- after each test, or by app.http.unmock([mock]). app.http.test_url(path): this test instance.
function http.mock(pattern, response)
  if not http.test_mode() then error("app.http.mock: only under `sluice test`", 2) end
  if type(pattern) ~= "string" and type(pattern) ~= "function" then error("app.http.mock: pattern must be a string or a function", 2) end
  if type(response) ~= "table" and type(response) ~= "function" then error("app.http.mock: response must be a table or a function", 2) end
  local spec = package.loaded.spec
  if not mock_reset_hooked and type(spec) == "table" and type(spec.reset_hooks) == "table" then
    spec.reset_hooks[#spec.reset_hooks + 1] = function() mocks = {} end
    mock_reset_hooked = true
  end
  local m = { pattern = pattern, response = response, calls = {} }
  mocks[#mocks + 1] = m
  return m
end

function http.unmock(m)
  if m == nil then mocks = {}; return end
  for i = #mocks, 1, -1 do if mocks[i] == m then table.remove(mocks, i) end end
end

function http.test_url(path)
  local port = http.test_port()
  if not port then error("app.http.test_url: only under `sluice test`", 2) end
  return "http://127.0.0.1:" .. port .. (path or "/")
end

-- Cache: app.cache.get/set/incr/del. Redis when redis.url is set (shared by every instance, keys
-- under <prefix>c:), else an in-process LRU table with TTLs shared by the workers (10,000 entries).
-- Values: strings, numbers, booleans, tables (as JSON). Failures (Redis down or slower than 0.5 s)
-- never raise: get and incr return nil, message (a miss); set and del return false, message.
local has_cache, ccache = pcall(require, "sluice.cache")
local cache = {}
app.cache = cache

local function encode(v)
  local t = type(v)
  if t == "string" then return "s" .. v end
  if t == "number" then
    if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%.0f", v) end
    return string.format("%.17g", v)
  end
  if t == "boolean" then return v and "b1" or "b0" end
  if t == "table" then return "j" .. core.json_encode(v) end
  error("app.cache: cannot store a " .. t, 3)
end

local function decode(s)
  if s == nil then return nil end
  local c = s:sub(1, 1)
  if c == "s" then return s:sub(2) end
  if c == "j" then return cjson.decode(s:sub(2)) end
  if c == "b" then return s == "b1" end
  return tonumber(s) or s
end

local function need_cache()
  if not has_cache then error("app.cache is not available in this build", 3) end
end

local function check_ttl(ttl)
  if ttl ~= nil and (type(ttl) ~= "number" or ttl < 0) then error("app.cache: ttl must be a number of seconds >= 0", 3) end
end

function cache.get(key)
  need_cache()
  local v, err = ccache.get(key)
  if v == nil then return nil, err end
  return decode(v)
end

function cache.set(key, value, ttl)
  need_cache()
  check_ttl(ttl)
  if value == nil then return ccache.del(key) end
  return ccache.set(key, encode(value), ttl or 0)
end

function cache.incr(key, by, ttl)
  need_cache()
  check_ttl(ttl)
  if by ~= nil and type(by) ~= "number" then error("app.cache.incr: by must be a number", 2) end
  return ccache.incr(key, by or 1, ttl or 0)
end

function cache.del(key)
  need_cache()
  return ccache.del(key)
end

function cache.backend()
  return has_cache and ccache.backend() or "none"
end

-- The handler toolkit (docs/lua-api.md): crypto, password hashing, JWT, validation, sessions
-- (app.cache or a signed cookie) and CSRF.
app.crypto = require "sluice_crypto"
app.password = app.crypto._password(app.config)
app.jwt = require "sluice_jwt"
app.jwt._init(core.json_encode)
app.validate = require("sluice_validate").validate
app.session, app.csrf = require("sluice_session").new(app)

-- W3C Trace Context: outbound calls made while handling a request carry its traceparent (this
-- request's span as the callee's parent) unless the call sets one itself.
http.add_header_hook(function()
  local tp = clog.traceparent()
  if tp then return { traceparent = tp } end
end)

return app
