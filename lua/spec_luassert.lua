-- spec_luassert.lua: the specs' `assert`, `spy`, `stub`, `mock` and `match`: luassert itself
-- (Debian lua-luassert + lua-say, from the system Lua path), with sluice's own assertions
-- registered the luassert way. A failed assertion raises a failure object (so the runner tells
-- it from an error) whose message starts with the user's spec file:line.
local M = {}

local function require_luassert()
  local ok, a = pcall(require, "luassert")
  if not ok then
    -- a LUA_PATH without ";;" hides the system tree: look there explicitly
    package.path = package.path .. ";/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
    ok, a = pcall(require, "luassert")
  end
  if not ok then
    error("sluice test needs luassert and say (Debian packages lua-luassert and lua-say, installed by "
      .. "tools/bootstrap): " .. tostring(a):match("^[^\n]*"), 0)
  end
  return a
end

local assert = require_luassert()
local astate = require "luassert.state"
local namespace = require "luassert.namespaces"
local util = require "luassert.util"

M.assert = assert
M.spy = require "luassert.spy"
M.stub = require "luassert.stub"
M.mock = require "luassert.mock"
M.match = require "luassert.match"

M.current_file = nil -- set by the runner: the spec file being run

---------------------------------------------------------------- failure and pending objects

local FAILURE = { __tostring = function(e) return e.message end }
local PENDING = { __tostring = function(e) return e.message end }

function M.is_failure(e) return type(e) == "table" and getmetatable(e) == FAILURE end
function M.is_pending(e) return type(e) == "table" and getmetatable(e) == PENDING end

-- Sources of the runner's own files (each registers itself): never reported as the location.
M.runtime_sources = { [debug.getinfo(1, "S").source] = true }

local function is_runtime_source(src)
  return M.runtime_sources[src] or src:find("/luassert/", 1, true) or src:find("/say/", 1, true)
end

-- The location to report: the innermost frame in the spec file being run (also when the
-- assertion sits in a helper it called), else the first frame outside luassert and the runner.
function M.location(level)
  local fallback
  for lv = (level or 2) + 1, 80 do
    local info = debug.getinfo(lv, "Sl")
    if not info then break end
    if info.what ~= "C" and (info.currentline or 0) > 0 and not is_runtime_source(info.source) then
      local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
      local loc = src .. ":" .. info.currentline
      if M.current_file == nil or src == M.current_file then return loc end
      fallback = fallback or loc
    end
  end
  return fallback
end

-- Set by the wrapped `same`/`equal` just before luassert raises their failure: a line sluice
-- adds to luassert's message (the path of the first difference).
local note

local function failure_text(msg)
  if type(msg) == "string" then return msg end
  if util.hastostring(msg) then return tostring(msg) end
  if msg == nil then return "assertion failed!" end
  return astate.format_argument(msg) or tostring(msg)
end

-- Replaces `error` inside luassert's assert module: raises a failure object.
local function fail(msg)
  local text = failure_text(msg)
  if note then text, note = text .. "\n" .. note, nil end
  local loc = M.location(2)
  if loc then text = loc .. ": " .. text end
  error(setmetatable({ message = text }, FAILURE), 0)
end
M.fail = fail

-- busted's pending(): inside a test, stops it and reports it as pending.
function M.pending(msg)
  error(setmetatable({ message = msg ~= nil and tostring(msg) or "" }, PENDING), 0)
end

-- Both functions that raise assertion failures (assert(...) and assert.x(...)) see `error` as fail.
for _, f in ipairs({ getmetatable(assert).__call, getmetatable(assert.is_true).__call }) do
  setfenv(f, setmetatable({ error = fail }, { __index = getfenv(f) }))
end

---------------------------------------------------------------- the first difference

local function is_ident(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil end

local function path_elem(k)
  if is_ident(k) then return "." .. k end
  if type(k) == "string" then return ("[%q]"):format(k) end
  return "[" .. tostring(k) .. "]"
end

local function show(v)
  if type(v) == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if type(v) == "table" then return "a table" end
  return tostring(v)
end

local TORDER = { number = 1, string = 2, boolean = 3 }
local function keycmp(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    local oa, ob = TORDER[ta] or 9, TORDER[tb] or 9
    if oa ~= ob then return oa < ob end
    return ta < tb
  end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, keycmp)
  return keys
end

-- The path of the first difference between e and a (keys in a stable order), or nil.
local function deepdiff(e, a, path, seen)
  if rawequal(e, a) then return nil end
  if type(e) ~= "table" or type(a) ~= "table" then
    if e == a then return nil end
    return path, e, a
  end
  seen[e] = seen[e] or {}
  if seen[e][a] then return nil end
  seen[e][a] = true
  for _, k in ipairs(sorted_keys(e)) do
    local p, x, y = deepdiff(rawget(e, k), rawget(a, k), path .. path_elem(k), seen)
    if p then return p, x, y end
  end
  for _, k in ipairs(sorted_keys(a)) do
    if rawget(e, k) == nil then return path .. path_elem(k), nil, rawget(a, k) end
  end
  return nil
end
M.deepdiff = function(e, a) return deepdiff(e, a, "t", {}) end

local function wrap(name, explain)
  local orig = namespace.assertion[name]
  assert:register("assertion", name, function(state, args, level)
    local e, a = args[1], args[2]
    local ok, ret = orig.callback(state, args, level)
    note = nil
    if (not ok) == state.mod then note = explain(e, a, state.mod) end
    return ok, ret
  end, orig.positive_message, orig.negative_message)
end

local function explain_same(e, a, positive)
  if not positive or type(e) ~= "table" or type(a) ~= "table" then return nil end
  local ok, p, x, y = pcall(deepdiff, e, a, "t", {})
  if not ok or not p then return nil end
  return ("First difference: %s: expected %s, got %s"):format(p, show(x), show(y))
end

local function explain_equal(e, a, positive)
  if positive and type(e) == "table" and type(a) == "table" and not select(2, pcall(deepdiff, e, a, "t", {})) then
    return "(the tables have the same contents but are different objects: use assert.same)"
  end
end

wrap("same", explain_same)
wrap("equals", explain_equal)
wrap("equal", explain_equal)

---------------------------------------------------------------- sluice's own assertions

local s = require "say"

-- assert.status(expected, res): the response's status; the failure shows the body's first
-- line, which in development is the handler's own `file:line: message` for a 500.
local function status(state, args, level)
  local want, res = args[1], args[2]
  local got = type(res) == "table" and res.status or nil
  local body = type(res) == "table" and type(res.body) == "string" and res.body or ""
  if #body > 300 then body = body:sub(1, 300) .. "..." end
  args[1], args[2], args[3] = tostring(got), tostring(want), body
  args.n = 3
  args.nofmt = { true, true, true }
  return got == want
end
s:set("assertion.status.positive", "Expected response status %s to be %s.\nBody:\n%s")
s:set("assertion.status.negative", "Expected response status %s not to be %s.\nBody:\n%s")
assert:register("assertion", "status", status, "assertion.status.positive", "assertion.status.negative")

-- assert.header(name, expected, res): res.headers[name:lower()] equals expected (a string),
-- or, with expected = nil, is present.
local function header(state, args, level)
  local name, want, res = args[1], args[2], args[3]
  if type(name) ~= "string" then error("assert.header(name, value, response): name must be a string", level) end
  local hs = type(res) == "table" and res.headers or {}
  local got = hs[name:lower()]
  args[1], args[2], args[3] = name, got, want == nil and "(present)" or want
  args.n = 3
  args.nofmt = { [1] = true, [3] = want == nil }
  if want == nil then return got ~= nil end
  return got == want
end
s:set("assertion.header.positive", "Expected response header %s.\nPassed in:\n%s\nExpected:\n%s")
s:set("assertion.header.negative", "Expected response header %s not to be as given.\nPassed in:\n%s\nDid not expect:\n%s")
assert:register("assertion", "header", header, "assertion.header.positive", "assertion.header.negative")

---------------------------------------------------------------- state per test

-- Spies, stubs, formatters and parameters a test sets are undone after it (luassert snapshots).
function M.snapshot() return assert:snapshot() end

-- luassert colours the marker of the differing key through lua-term; without it, no colour.
local has_term = pcall(require, "term")
function M.set_color(on)
  assert:set_parameter("TableErrorHighlightColor", on and has_term and "red" or "none")
end

-- Formats any value the way luassert prints arguments.
function M.format(v)
  return astate.format_argument(v) or tostring(v)
end

return M
