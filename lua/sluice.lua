-- sluice: the Lua API handler scripts see as `require "sluice"` (sugar over the C primitives
-- in sluice.core). Misuse raises; database failures raise error tables { sqlstate, message, code }.
local core = require "sluice.core"
local cjson = require "cjson"

local app = {}
app.config = core.config()
app.json = cjson
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
  if type(data) == "table" then data = cjson.encode(data)
  elseif data ~= nil then data = tostring(data) end
  local id = ev.id and tostring(ev.id) or nil
  return core.publish(channel, data or "", ev.event, id, ev.retry)
end

app.sleep = core.sleep
app.now = core.now
app.worker = core.worker

-- app.timer(seconds, fn [, repeat]): run fn after seconds (every seconds when repeat is true).
function app.timer(seconds, fn, rep)
  core.timer(seconds, fn, rep)
end

-- app.log(level, fmt, ...) or app.log(message)
function app.log(level, fmt, ...)
  if fmt == nil then return core.log("info", tostring(level)) end
  if select("#", ...) > 0 then fmt = string.format(fmt, ...) end
  return core.log(level, tostring(fmt))
end

-- app.redirect(url [, status]) -> response table
function app.redirect(url, status)
  return { status = status or 302, headers = { location = url }, body = "" }
end

-- app.error(status, message) -> raises an error that becomes that status with a JSON body
function app.error(status, message)
  error(setmetatable({ status = status, message = message },
    { __tostring = function(e) return tostring(e.message) end }), 2)
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

return app
