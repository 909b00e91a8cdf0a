-- board_http: JSON responses, request validation and pagination shared by the board's handlers.
-- Validation failures raise an HttpError that `handler()` turns into { error = "..." } with
-- its status, so handlers read straight through and 4xx answers are not logged as errors.
local app = require "sluice"
local cjson = require "cjson"

local M = {}

local HttpError = {}
HttpError.__index = HttpError
HttpError.__tostring = function(e) return e.status .. ": " .. e.message end

-- M.fail(status, message): stop the handler and answer { error = message } with status.
function M.fail(status, message)
  error(setmetatable({ status = status, message = message }, HttpError), 0)
end

-- An empty Lua table encodes as {}: list fields go through app.array so an empty list is [].
M.array = app.array
M.encode = app.json.encode

function M.json(status, value, extra)
  local headers = {}
  local res = { status = status, json = value, headers = headers }
  if extra then
    for k, v in pairs(extra.headers or {}) do headers[k] = v end
    res.cookies = extra.cookies
  end
  return res
end

-- handler(fn): wraps a route handler so M.fail() answers cleanly; other errors (bugs,
-- database errors) propagate to the runtime unchanged (500, or 503 when the pool is down).
function M.handler(fn)
  return function(req)
    local ok, res = pcall(fn, req)
    if ok then return res end
    if getmetatable(res) == HttpError then
      return M.json(res.status, { error = res.message })
    end
    error(res, 0)
  end
end

-- Well-formed UTF-8 without control characters other than tab and newline (when allowed).
local function valid_text(s, multiline)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    if c < 0x80 then
      if c == 0x7f or (c < 0x20 and not (multiline and (c == 0x0a or c == 0x09))) then return false end
      i = i + 1
    else
      local len = c >= 0xf0 and c <= 0xf4 and 4 or c >= 0xe0 and 3 or c >= 0xc2 and c < 0xe0 and 2 or nil
      if not len or i + len - 1 > n then return false end
      for k = i + 1, i + len - 1 do
        local b = s:byte(k)
        if b < 0x80 or b > 0xbf then return false end
      end
      i = i + len
    end
  end
  return true
end

-- Number of characters in a UTF-8 string (continuation bytes are not counted).
function M.chars(s)
  local _, cont = s:gsub("[\128-\191]", "")
  return #s - cont
end

-- M.body(req, allowed): the JSON object of the request; rejects anything else and unknown
-- fields, so a typo ("titel") is an error rather than silently ignored.
function M.body(req, allowed)
  local ct = req.headers["content-type"] or ""
  if not ct:lower():find("^application/json") then
    M.fail(415, "content-type: must be application/json")
  end
  local v, err = req:json()
  if v == nil then M.fail(400, err or "request body is empty") end
  if type(v) ~= "table" or (next(v) ~= nil and v[1] ~= nil) then M.fail(400, "body: must be a JSON object") end
  local known = {}
  for _, k in ipairs(allowed) do known[k] = true end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not known[k] then M.fail(422, k .. ": unknown field (allowed: " .. table.concat(allowed, ", ") .. ")") end
  end
  for k, x in pairs(v) do
    if x == cjson.null then v[k] = nil end
  end
  return v
end

-- M.text(obj, field, { min =, max =, multiline =, required = }): a trimmed string field.
function M.text(obj, field, o)
  local s = obj[field]
  if s == nil then
    if o.required then M.fail(422, field .. ": is required") end
    return nil
  end
  if type(s) ~= "string" then M.fail(422, field .. ": must be a string") end
  if not valid_text(s, o.multiline) then
    M.fail(422, field .. ": must be UTF-8 text without control characters")
  end
  s = s:match("^%s*(.-)%s*$")
  local n = M.chars(s)
  if n < (o.min or 0) or n > o.max then
    if (o.min or 0) > 0 then M.fail(422, string.format("%s: must be %d..%d characters", field, o.min, o.max)) end
    M.fail(422, string.format("%s: must be at most %d characters", field, o.max))
  end
  return s
end

-- Ids in paths: positive integers that fit a bigint and a double exactly; anything else is
-- a resource that cannot exist, so 404 (not 400) keeps the answer the same for all of them.
function M.id(s, what)
  if type(s) == "string" and s:match("^[1-9]%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?$") then
    return tonumber(s)
  end
  M.fail(404, what .. " not found")
end

-- M.page(req): { limit =, cursor = | page = } from ?limit=&cursor= or ?page=.
function M.page(req)
  local q = req.query
  local cfg = app.config.app or {}
  local default, max = cfg.page_size or 20, cfg.max_page_size or 100
  local p = { limit = default }
  if q.limit ~= nil then
    local n = type(q.limit) == "string" and q.limit:match("^%d+$") and tonumber(q.limit)
    if not n or n < 1 or n > max then M.fail(400, "limit: must be an integer 1.." .. max) end
    p.limit = n
  end
  if q.cursor ~= nil and q.page ~= nil then M.fail(400, "cursor, page: give one or the other") end
  if q.cursor ~= nil then
    local c = type(q.cursor) == "string" and q.cursor:match("^[1-9]%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?$")
    if not c then M.fail(400, "cursor: must be the next_cursor of a previous page") end
    p.cursor = tonumber(c)
  elseif q.page ~= nil then
    local n = type(q.page) == "string" and q.page:match("^%d+$") and tonumber(q.page)
    if not n or n < 1 or n > 100000 then M.fail(400, "page: must be an integer 1..100000") end
    p.page = n
  end
  return p
end

-- M.listing(rows, p, total): the response of a list endpoint. rows holds up to limit+1 rows:
-- the extra one only says that another page exists.
function M.listing(rows, p, total)
  local more = #rows > p.limit
  if more then rows[#rows] = nil end
  local res = { items = M.array(rows), limit = p.limit }
  if p.page then
    res.page = p.page
    res.total = total
    res.pages = math.max(1, math.ceil((total or 0) / p.limit))
  end
  res.next_cursor = more and tostring(rows[#rows].id) or cjson.null
  return res
end

return M
