-- spec_helpers.lua: what `sluice test` (and `sluice lua`) give spec files: request(), subscribe(),
-- clock, db fixtures, wired to the runtime through sluice.testing (real sockets into the app's
-- own listener).
local T = require "sluice.testing"
local cjson = require "cjson"
local app = require "sluice"

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function encode_pairs(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then
      for _, x in ipairs(v) do out[#out + 1] = urlencode(k) .. "=" .. urlencode(x) end
    else
      out[#out + 1] = urlencode(k) .. "=" .. urlencode(v)
    end
  end
  return table.concat(out, "&")
end

local function build(method, path, opts, extra)
  opts = opts or {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = tostring(v) end
  for k, v in pairs(extra or {}) do headers[k] = headers[k] or v end
  local body = opts.body
  if opts.json ~= nil then
    body = cjson.encode(opts.json)
    headers["content-type"] = headers["content-type"] or "application/json"
  elseif opts.form then
    body = encode_pairs(opts.form)
    headers["content-type"] = headers["content-type"] or "application/x-www-form-urlencoded"
  end
  local target = path
  if opts.query then target = target .. (target:find("?", 1, true) and "&" or "?") .. encode_pairs(opts.query) end
  local host = headers.host or "localhost"
  headers.host = nil
  local lines = { method:upper() .. " " .. target .. " HTTP/1.1", "Host: " .. host }
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do lines[#lines + 1] = k .. ": " .. headers[k] end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  lines[#lines + 1] = "Connection: close"
  return table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

local Response = {}
Response.__index = Response
function Response:json()
  local ok, v = pcall(cjson.decode, self.body)
  if not ok then error("response body is not JSON: " .. tostring(self.body):sub(1, 200), 2) end
  return v
end

-- request(method, path, { json =, body =, form =, headers =, query = }) -> response
local function request(method, path, opts)
  local status, headers, body, wire = T.raw(build(method, path, opts))
  if not status then error("request " .. method .. " " .. path .. ": " .. tostring(headers), 2) end
  return setmetatable({ status = status, headers = headers, body = body, wire_bytes = wire }, Response)
end

local open_streams = {}

local Stream = {}
Stream.__index = Stream
-- s:next_event(timeout_s) -> { id =, event =, data = } or nil, "timeout" | "stream closed"
function Stream:next_event(timeout) return self.h:next_event(timeout or 1) end
function Stream:close() self.h:close(); open_streams[self] = nil end
-- number of comment blocks (heartbeats) seen so far
function Stream:comments() return self.h:comments() end

-- subscribe(path, { headers = ..., last_event_id = ... }) -> stream; raises when refused
local function subscribe(path, opts)
  opts = opts or {}
  local extra = { accept = "text/event-stream" }
  if opts.last_event_id then extra["last-event-id"] = tostring(opts.last_event_id) end
  local raw = build("GET", path, opts, extra):gsub("Connection: close\r\n", "")
  local status, a, b = T.raw(raw, true)
  if status == 200 and type(a) == "userdata" then
    local s = setmetatable({ h = a, status = 200 }, Stream)
    open_streams[s] = true
    return s
  end
  if not status then error("subscribe " .. path .. ": " .. tostring(a), 2) end
  local err = setmetatable({ status = status, headers = a, body = b },
    { __tostring = function(e) return "subscribe " .. path .. ": status " .. e.status .. " " .. tostring(e.body) end })
  error(err, 2)
end

local clock = {
  now = T.clock_now,
  advance = T.clock_advance,
  reset = T.reset,
}

local core = require "sluice.core"
local db = {}
-- db.fixture(): inside a describe, each test runs in a transaction that is rolled back after it
function db.fixture()
  local spec = require "spec"
  spec.before_each(function()
    local ok, err = core.db.fixture_begin()
    if not ok then error(err, 0) end
  end)
  spec.after_each(function() core.db.fixture_rollback() end)
end

local M = { request = request, subscribe = subscribe, clock = clock, db = db, app = app }

-- The globals a spec file (or the `sluice lua` REPL) sees.
function M.globals()
  return { request = request, subscribe = subscribe, clock = clock, db = db, app = app }
end

-- After every test: streams the test left open are closed, rate-limit buckets forgotten.
function M.reset()
  for s in pairs(open_streams) do s:close() end
  T.reset()
end

return M
