-- board_http: JSON responses, request validation (app.validate schemas) and pagination shared by
-- the board's handlers. M.fail raises an HttpError that `handler()` turns into { error = "..." }
-- with its status; invalid fields raise app.error(422, errors), which the runtime answers with
-- { error = "validation failed", fields = ... }. Handlers read straight through, and 4xx
-- answers are not logged as errors.
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

-- Number of characters in a UTF-8 string (continuation bytes are not counted).
function M.chars(s)
  local _, cont = s:gsub("[\128-\191]", "")
  return #s - cont
end

-- M.input(req, schema): the request's JSON object, checked by app.validate against schema (its
-- fields; unknown fields are errors, so a typo like "titel" is not silently ignored). A wrong
-- field answers 422 { error = "validation failed", fields = { title = "must be 1..100 characters" } }
-- through app.error; a body that is not JSON, or not an object, is a 400; another content type 415.
function M.input(req, schema)
  local ct = req.headers["content-type"] or ""
  if not ct:lower():find("^application/json") then
    M.fail(415, "content-type: must be application/json")
  end
  local v, err = req:json()
  if v == nil then M.fail(400, err or "request body is empty") end
  if type(v) ~= "table" or (next(v) ~= nil and v[1] ~= nil) then M.fail(400, "body: must be a JSON object") end
  for k, x in pairs(v) do
    if x == cjson.null then v[k] = nil end          -- null means "not given"
  end
  local clean, errors = app.validate(schema, v)
  if not clean then app.error(422, errors) end
  return clean
end

-- Field rules shared by the schemas: one line of text, trimmed, counted in characters.
function M.line(min, max, required)
  return { type = "string", trim = true, single_line = true, min_length = min, max_length = max, required = required }
end

function M.text(min, max, required)
  return { type = "string", trim = true, min_length = min, max_length = max, required = required }
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
