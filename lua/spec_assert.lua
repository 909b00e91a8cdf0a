-- spec_assert.lua: luassert-compatible assertions for the sluice spec runner:
-- modifier chains (assert.are_not.same), deterministic pretty printing, and a
-- deep compare that names the path of the first difference.
local M = {}

-- Frames from this file are skipped when locating a failure, so the reported
-- file:line is the caller's (the spec file), never an assertion's internals.
local MYSRC = debug.getinfo(1, "S").source
M.short_src = debug.getinfo(1, "S").short_src

M.current_file = nil -- set by the runner: path of the spec file being run
M.last_failure = nil -- last message raised by an assertion; lets the runner
                     -- tell an assertion failure from an ordinary error

---------------------------------------------------------------- printing

local ESC = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }

local function quote(s)
  return '"' .. (s:gsub('[%c"\\]', function(c)
    return ESC[c] or string.format("\\%d", c:byte())
  end)) .. '"'
end

-- Deterministic key order: numbers ascending, then strings, then the rest.
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
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, keycmp)
  return keys
end

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function path_elem(k)
  if is_ident(k) then return "." .. k end
  if type(k) == "string" then return "[" .. quote(k) .. "]" end
  return "[" .. tostring(k) .. "]"
end

local function pretty(v, indent, seen, depth)
  if type(v) == "string" then return quote(v) end
  if type(v) ~= "table" then return tostring(v) end
  indent, seen, depth = indent or "", seen or {}, depth or 0
  if seen[v] then return "<cycle>" end
  if depth > 12 then return "{...}" end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  seen[v] = true
  local n = 0 -- length of the hole-free array prefix, printed without keys
  while rawget(v, n + 1) ~= nil do n = n + 1 end
  local parts, keys = {}, sorted_keys(v)
  for i, k in ipairs(keys) do
    if i > 40 then -- a failure report, not a dump: long tables are cut
      parts[#parts + 1] = ("... (%d more)"):format(#keys - 40)
      break
    end
    local prefix = ""
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
      prefix = is_ident(k) and (k .. " = ")
        or ("[" .. pretty(k, indent, seen, depth + 1) .. "] = ")
    end
    parts[#parts + 1] = prefix .. pretty(rawget(v, k), indent .. "  ", seen, depth + 1)
  end
  seen[v] = nil
  if #parts == 0 then return "{}" end
  local one = "{ " .. table.concat(parts, ", ") .. " }"
  if #one + #indent <= 72 and not one:find("\n", 1, true) then return one end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ")
    .. "\n" .. indent .. "}"
end
M.pretty = pretty

---------------------------------------------------------------- deep compare

-- Returns nil when e and a are the same, else the path of the first
-- difference and the two values found there. Visits keys in sorted order so
-- the reported difference is deterministic.
local function deepdiff(e, a, path, seen)
  if e == a then return nil end
  if type(e) == "number" and type(a) == "number" and e ~= e and a ~= a then return nil end
  if type(e) ~= "table" or type(a) ~= "table" then return path, e, a end
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
function M.deepdiff(e, a) return deepdiff(e, a, "t", {}) end

---------------------------------------------------------------- failures

local function where()
  local fallback
  for level = 2, 60 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.source ~= MYSRC and (info.currentline or 0) > 0 then
      local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
      local loc = src .. ":" .. info.currentline
      if M.current_file == nil or src == M.current_file then return loc end
      fallback = fallback or loc
    end
  end
  return fallback or "?"
end

local function fail(msg)
  msg = where() .. ": " .. msg
  M.last_failure = msg
  error(msg, 0)
end
M.fail = fail

local function show(v) return pretty(v) end

local function exp_act(e, a)
  return "expected: " .. show(e) .. "\nactual:   " .. show(a)
end

---------------------------------------------------------------- assertions

-- Each assertion: nargs (its own arguments; one more is the optional user
-- message), minargs, and fn(...) -> pass, msg, negated_msg, detail, neg_detail.
local defs = {}
local function def(names, nargs, minargs, fn)
  for name in names:gmatch("%S+") do
    defs[name] = { nargs = nargs, minargs = minargs, fn = fn }
  end
end

def("equal equals", 2, 2, function(e, a)
  local detail = exp_act(e, a)
  if type(e) == "table" and type(a) == "table" and not M.deepdiff(e, a) then
    detail = detail .. "\n(the tables have the same contents but are different objects: use assert.same)"
  end
  return e == a, "expected values to be equal", "expected values to differ",
    detail, "both: " .. show(a)
end)

def("same", 2, 2, function(e, a)
  local p, x, y = M.deepdiff(e, a)
  local detail = exp_act(e, a)
  if p and (type(e) == "table" or type(a) == "table") then
    detail = p .. ": expected " .. show(x) .. ", got " .. show(y) .. "\n" .. detail
  end
  return p == nil, "expected values to be the same", "expected values to differ",
    detail, "both: " .. show(a)
end)

def("near", 3, 3, function(e, a, tol)
  local pass = type(e) == "number" and type(a) == "number" and math.abs(e - a) <= tol
  return pass, "expected values to be within " .. tostring(tol),
    "expected values to differ by more than " .. tostring(tol), exp_act(e, a)
end)

local function value_check(names, label, pred)
  def(names, 1, 0, function(v)
    return pred(v), "expected " .. label, "expected not " .. label, "value: " .. show(v)
  end)
end
value_check("truthy", "a truthy value", function(v) return v ~= nil and v ~= false end)
value_check("falsy", "a falsy value", function(v) return v == nil or v == false end)
value_check("true", "true", function(v) return v == true end)
value_check("false", "false", function(v) return v == false end)
for _, t in ipairs({ "nil", "string", "number", "table", "function", "boolean", "userdata", "thread" }) do
  value_check(t, "a value of type " .. t, function(v) return type(v) == t end)
end

local function errstr(err)
  local mt = type(err) == "table" and getmetatable(err)
  if mt and mt.__tostring then return tostring(err) end
  return type(err) == "string" and err or nil
end

def("error errors has_error", 2, 1, function(fn, expected)
  if type(fn) ~= "function" then
    return false, "expected a function", "expected a function", "value: " .. show(fn)
  end
  local ok, err = pcall(fn)
  if ok then
    return false, "expected an error", "expected no error", "no error was raised",
      "no error was raised"
  end
  local pass, detail = true, "error: " .. show(err)
  if expected ~= nil then
    local s = errstr(err)
    if type(expected) == "string" and s then
      pass = s == expected or s:gsub("^.-:%d+: ", "", 1) == expected
    else
      pass = M.deepdiff(expected, err) == nil
    end
    detail = exp_act(expected, err)
  end
  return pass, "expected a matching error", "expected no error", detail, detail
end)

def("error_matches error_match matches_error", 4, 2, function(fn, pattern, init, plain)
  if type(fn) ~= "function" then
    return false, "expected a function", "expected a function", "value: " .. show(fn)
  end
  local ok, err = pcall(fn)
  if ok then return false, "expected an error", "expected no error", "no error was raised" end
  local s = errstr(err)
  local pass = s ~= nil and s:find(pattern, init, plain) ~= nil
  local detail = "pattern: " .. show(pattern) .. "\nerror:   " .. show(err)
  return pass, "expected the error to match", "expected the error not to match", detail
end)

def("matches match", 4, 2, function(pattern, s, init, plain)
  if type(s) == "number" then s = tostring(s) end
  local pass = type(s) == "string" and s:find(pattern, init, plain) ~= nil
  local detail = "pattern: " .. show(pattern) .. "\nactual:  " .. show(s)
  return pass, "expected the string to match", "expected the string not to match", detail
end)

---------------------------------------------------------------- chaining

local MODS = { is = true, are = true, was = true, has = true, have = true, does = true,
  ["do"] = true, a = true, an = true, the = true, to = true, be = true }
local NEG = { ["not"] = true, no = true }

local function run_assertion(name, neg, ...)
  local d = defs[name]
  local n = select("#", ...)
  if n < d.minargs then
    fail(("assert.%s expects at least %d argument(s), got %d"):format(name, d.minargs, n))
  end
  local usermsg = n > d.nargs and select(d.nargs + 1, ...) or nil
  local pass, msg, negmsg, detail, negdetail = d.fn(...)
  if neg then pass, msg, detail = not pass, negmsg, negdetail or detail end
  if pass then return ... end
  if usermsg ~= nil then msg = tostring(usermsg) end
  if detail then msg = msg .. "\n  " .. detail:gsub("\n", "\n  ") end
  fail(msg)
end

local proxy
-- Resolves a key such as "is_not_nil" or "has_no_error": "_"-separated
-- tokens, each a modifier, a negation, or (last) an assertion name; the
-- longest assertion name wins so error_matches is not read as error+matches.
local function lookup(neg, key)
  local toks = {}
  for t in tostring(key):lower():gmatch("[^_]+") do toks[#toks + 1] = t end
  local i = 1
  while i <= #toks do
    for j = #toks, i, -1 do
      local name = table.concat(toks, "_", i, j)
      if defs[name] and j == #toks then
        return function(...) return run_assertion(name, neg, ...) end
      end
    end
    if NEG[toks[i]] then neg = not neg
    elseif not MODS[toks[i]] then error("unknown assertion: assert." .. tostring(key), 3) end
    i = i + 1
  end
  return proxy(neg)
end

function proxy(neg)
  return setmetatable({}, {
    __index = function(_, key) return lookup(neg, key) end,
    -- assert(v, msg) keeps working like Lua's assert, with a spec location.
    __call = function(_, v, msg, ...)
      if v then return v, msg, ... end
      fail(msg ~= nil and tostring(msg) or "assertion failed!")
    end,
  })
end

M.assert = proxy(false)

return M
