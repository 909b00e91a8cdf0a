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

local function route(method)
  return function(pattern, fn)
    if type(pattern) ~= "string" then error("route pattern must be a string", 2) end
    if type(fn) ~= "function" then error("route handler must be a function", 2) end
    core.route(method, pattern, fn)
  end
end

app.get = route("GET")
app.post = route("POST")
app.put = route("PUT")
app.patch = route("PATCH")
app.delete = route("DELETE")
app.options = route("OPTIONS")

function app.route(method, pattern, fn)
  if type(fn) ~= "function" then error("route handler must be a function", 2) end
  core.route(method, pattern, fn)
end

-- app.sse(pattern, fn): fn(req) returns { channel = "x" | channels = {...}, user = "id" }
-- to accept the subscriber, or { status = 401, json = ... } (any non-200) to refuse.
function app.sse(pattern, fn)
  if type(fn) ~= "function" then error("sse authorizer must be a function", 2) end
  core.route("GET", pattern, fn, "sse")
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
  local res, err = core.publish(channel, data or "", ev.event, id, ev.retry)
  if res == nil and err and err ~= "SSE is not running" then error("app.publish: " .. err, 2) end
  return res, err
end

-- app.static(prefix, dir [, { cache_control =, index = }]): files under dir, served by the C core
-- (sendfile, ETag/Last-Modified/304, Range, .gz siblings, never outside dir).
function app.static(prefix, dir, opts)
  opts = opts or {}
  core.static(prefix, dir, opts.cache_control, opts.index)
end

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
  if type(prefix) ~= "string" or prefix:sub(1, 1) ~= "/" then error("middleware prefix must start with '/'", 3) end
  if type(fn) ~= "function" then error("middleware must be a function", 3) end
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
  core.timer(seconds, fn, rep)
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

function db.query(sql, ...)
  local rows, err = cdb.query(sql, ...)
  if rows == nil then error(err, 2) end
  return rows
end

function db.read(sql, ...)
  local rows, err = cdb.read(sql, ...)
  if rows == nil then error(err, 2) end
  return rows
end

-- app.db.transaction(fn): BEGIN; fn(); COMMIT — or ROLLBACK and re-raise when fn errors.
function db.transaction(fn)
  local ok, err = cdb.begin()
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
  cdb.listen(channel, fn)
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

return app
