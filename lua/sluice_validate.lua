-- sluice_validate: app.validate(schema, value) -> clean value | nil, errors. A small declarative
-- schema (docs/lua-api.md "Validation"); errors maps each failing field's path ("name",
-- "address.city", "items[2].qty", "$" for the value itself) to one message, so
-- app.error(422, errors) can answer { "error": "validation failed", "fields": errors }.
local cjson = require "cjson"

local null = cjson.null
local M = {}

local KNOWN = {
  type = true, required = true, nullable = true, default = true, message = true, check = true,
  min = true, max = true, min_length = true, max_length = true, pattern = true, enum = true,
  trim = true, binary = true, single_line = true, fields = true, unknown = true, items = true,
  min_items = true, max_items = true, unique = true, format = true,
}
local TYPES = { string = true, number = true, integer = true, boolean = true, object = true, array = true, any = true }

local FORMATS = {
  email = function(s) return #s <= 254 and s:match("^[^%s@]+@[^%s@]+%.[^%s@]+$") ~= nil end,
  uuid = function(s) return s:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil end,
  url = function(s) return s:match("^https?://[^%s/?#]+[^%s]*$") ~= nil end,
  date = function(s) return s:match("^%d%d%d%d%-%d%d%-%d%d$") ~= nil end,
}

-- Schema mistakes are programming errors: raise at the call with the schema path.
local function bad_schema(path, msg) error("app.validate: schema " .. (path == "" and "" or (path .. ": ")) .. msg, 0) end

local checked = setmetatable({}, { __mode = "k" })    -- schemas already checked

local function check_schema(s, path)
  if checked[s] then return end
  if type(s) ~= "table" then bad_schema(path, "must be a table") end
  for k in pairs(s) do
    if not KNOWN[k] then bad_schema(path, "unknown rule " .. tostring(k)) end
  end
  if s.type ~= nil and not TYPES[s.type] then bad_schema(path, "unknown type " .. tostring(s.type)) end
  if s.pattern ~= nil and type(s.pattern) ~= "string" then bad_schema(path, "pattern must be a Lua pattern string") end
  if s.enum ~= nil and type(s.enum) ~= "table" then bad_schema(path, "enum must be a list") end
  if s.check ~= nil and type(s.check) ~= "function" then bad_schema(path, "check must be a function") end
  if s.format ~= nil and not FORMATS[s.format] then bad_schema(path, "unknown format " .. tostring(s.format)) end
  if s.unknown ~= nil and s.unknown ~= "reject" and s.unknown ~= "strip" and s.unknown ~= "allow" then
    bad_schema(path, 'unknown must be "reject", "strip" or "allow"')
  end
  if s.fields ~= nil then
    if type(s.fields) ~= "table" then bad_schema(path, "fields must be a table") end
    for name, f in pairs(s.fields) do check_schema(f, path == "" and tostring(name) or (path .. "." .. tostring(name))) end
  end
  if s.items ~= nil then check_schema(s.items, path .. "[]") end
  checked[s] = true
end

local function child(path, name)
  if type(name) == "number" then return (path == "$" and "" or path) .. "[" .. name .. "]" end
  if path == "$" then return name end
  return path .. "." .. name
end

-- UTF-8 well-formed? and its length in characters (nil when malformed).
local function utf8_len(s)
  local n, i, len = 0, 1, #s
  while i <= len do
    local c = s:byte(i)
    local w = c < 0x80 and 1 or (c >= 0xc2 and c <= 0xdf) and 2 or (c >= 0xe0 and c <= 0xef) and 3
      or (c >= 0xf0 and c <= 0xf4) and 4 or nil
    if not w or i + w - 1 > len then return nil end
    for k = i + 1, i + w - 1 do
      local b = s:byte(k)
      if b < 0x80 or b > 0xbf then return nil end
    end
    n, i = n + 1, i + w
  end
  return n
end

local function is_array(t)
  if getmetatable(t) and getmetatable(t).__jsontype == "array" then return true end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  return n == #t
end

local function show(v) return type(v) == "string" and string.format("%q", v) or tostring(v) end

local validate_value

-- ctx: { errors = { [path] = message }, n = number of errors, root = the whole value }
local function add(ctx, path, msg)
  if ctx.errors[path] == nil then ctx.n = ctx.n + 1 end
  ctx.errors[path] = msg
end

local function validate_object(s, v, path, ctx)
  local out = {}
  local fields = s.fields
  if not fields then
    for k, x in pairs(v) do out[k] = x end
    return out
  end
  local names = {}
  for name in pairs(fields) do names[#names + 1] = name end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for _, name in ipairs(names) do
    local x = validate_value(fields[name], v[name], child(path, name), ctx)
    if x ~= nil then out[name] = x end
  end
  local unknown = s.unknown or "reject"
  for k, x in pairs(v) do
    if fields[k] == nil then
      if unknown == "reject" then add(ctx, child(path, tostring(k)), "unknown field")
      elseif unknown == "allow" then out[k] = x end
    end
  end
  return out
end

local function validate_array(s, v, path, ctx)
  local out = setmetatable({}, { __jsontype = "array" })
  local seen = s.unique and {}
  for i = 1, #v do
    local x = validate_value(s.items or {}, v[i], child(path, i), ctx)
    if seen and x ~= nil and type(x) ~= "table" then
      if seen[x] then add(ctx, child(path, i), "duplicate of item [" .. seen[x] .. "]") else seen[x] = i end
    end
    out[i] = x
  end
  return out
end

-- -> the clean value (nil when absent or failed); errors go to ctx
function validate_value(s, v, path, ctx)
  local function fail(msg) add(ctx, path, s.message or msg); return nil end
  if v == nil then
    if s.default ~= nil then
      local d = s.default
      if type(d) == "function" then d = d() end
      return d
    end
    if s.required then add(ctx, path, "is required") end   -- never replaced by s.message
    return nil
  end
  if v == null then
    if s.nullable then return v end
    if s.required or s.type ~= nil then return fail("must not be null") end
    return nil
  end
  local t, ty = s.type or (s.fields and "object") or (s.items and "array"), type(v)
  local n0 = ctx.n
  if t == "string" then
    if ty ~= "string" then return fail("must be a string") end
    if not s.binary then
      if not utf8_len(v) then return fail("must be UTF-8 text") end
      if v:find("[%z\1-\8\11\12\14-\31\127]") or (s.single_line and v:find("[\n\r\t]")) then
        return fail("must not contain control characters")
      end
    end
    if s.trim then v = v:match("^%s*(.-)%s*$") end
    local n = s.binary and #v or utf8_len(v)
    if s.required and n == 0 and s.min_length == nil then return fail("must not be empty") end
    local range = s.min_length and s.max_length and ("must be " .. s.min_length .. ".." .. s.max_length .. " characters")
    if s.min_length and n < s.min_length then return fail(range or ("must be at least " .. s.min_length .. " characters")) end
    if s.max_length and n > s.max_length then return fail(range or ("must be at most " .. s.max_length .. " characters")) end
    if s.pattern and not v:find(s.pattern) then return fail("has an invalid format") end
    if s.format and not FORMATS[s.format](v) then return fail("must be a valid " .. s.format) end
  elseif t == "number" or t == "integer" then
    if ty ~= "number" or v ~= v or v == math.huge or v == -math.huge then return fail("must be a number") end
    if t == "integer" and v % 1 ~= 0 then return fail("must be an integer") end
    if s.min and v < s.min then return fail("must be at least " .. s.min) end
    if s.max and v > s.max then return fail("must be at most " .. s.max) end
  elseif t == "boolean" then
    if ty ~= "boolean" then return fail("must be a boolean") end
  elseif t == "object" then
    if ty ~= "table" or (next(v) ~= nil and is_array(v)) then return fail("must be an object") end
    v = validate_object(s, v, path, ctx)
  elseif t == "array" then
    if ty ~= "table" or not is_array(v) then return fail("must be an array") end
    if s.min_items and #v < s.min_items then return fail("must have at least " .. s.min_items .. " items") end
    if s.max_items and #v > s.max_items then return fail("must have at most " .. s.max_items .. " items") end
    v = validate_array(s, v, path, ctx)
  end
  if ctx.n > n0 then return nil end                   -- something below failed: no enum or check
  if s.enum then
    local found = false
    for _, e in ipairs(s.enum) do if e == v then found = true; break end end
    if not found then
      local shown = {}
      for i, e in ipairs(s.enum) do shown[i] = show(e) end
      return fail("must be one of " .. table.concat(shown, ", "))
    end
  end
  if s.check then
    -- check(value, whole) -> nil/true (fine), false or "message", or { [subpath] = message }
    local msg = s.check(v, ctx.root)
    if msg ~= nil and msg ~= true then
      if type(msg) == "table" then
        for k, m in pairs(msg) do add(ctx, child(path, k), tostring(m)) end
        return nil
      end
      add(ctx, path, msg == false and (s.message or "is invalid") or tostring(msg))
      return nil
    end
  end
  return v
end

-- app.validate(schema, value) -> value | nil, errors
function M.validate(schema, value)
  if type(schema) ~= "table" then error("app.validate: schema must be a table", 2) end
  check_schema(schema, "")
  if value == nil and schema.default == nil then return nil, { ["$"] = "is required" } end
  local ctx = { errors = {}, n = 0, root = value }
  local out = validate_value(schema, value, "$", ctx)
  if ctx.n > 0 then return nil, ctx.errors end
  return out
end

return M
