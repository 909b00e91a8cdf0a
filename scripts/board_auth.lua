-- board_auth: who is asking. An `X-User: name` header (API clients, scripts, tests) or the
-- `board_session` cookie set by POST /api/login (browsers: EventSource cannot send headers).
local app = require "sluice"
local H = require "board_http"

local M = {}

M.COOKIE = "board_session"
local TTL = 7 * 24 * 3600

local NAME_RULE = "name: must be 1..32 characters: letters, digits, '_', '.' or '-'"

function M.valid_name(s)
  return type(s) == "string" and #s >= 1 and #s <= 32 and s:match("^[%w_.%-]+$") ~= nil
end

local function new_sid()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(16)
  if f then f:close() end
  if not b or #b ~= 16 then error("no random source for session ids") end
  return (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- M.user(req) -> name or nil. A malformed X-User is an error, not an anonymous request.
function M.user(req)
  local h = req.headers["x-user"]
  if h ~= nil then
    if not M.valid_name(h) then H.fail(400, "x-user: must be 1..32 characters: letters, digits, '_', '.' or '-'") end
    return h
  end
  local sid = req.cookies[M.COOKIE]
  if type(sid) == "string" and sid:match("^%x+$") and #sid == 32 then
    local rows = app.db.query("select user_name from sessions where id = $1 and expires_at > now()", sid)
    if rows[1] then return rows[1].user_name end
  end
  return nil
end

function M.require(req)
  local u = M.user(req)
  if not u then H.fail(401, "login required: send an X-User header or POST /api/login first") end
  return u
end

-- POST /api/login { name } -> 200 { name } and a session cookie
function M.login(req)
  local b = H.body(req, { "name" })
  if b.name == nil then H.fail(422, "name: is required") end
  if not M.valid_name(b.name) then H.fail(422, NAME_RULE) end
  local sid = new_sid()
  app.db.query("delete from sessions where expires_at < now()")
  app.db.query("insert into sessions (id, user_name, expires_at) values ($1, $2, now() + make_interval(secs => $3))",
    sid, b.name, TTL)
  return H.json(200, { name = b.name }, {
    cookies = { { name = M.COOKIE, value = sid, path = "/", httponly = true, samesite = "Lax", max_age = TTL } },
  })
end

-- POST /api/logout -> 204, the session is gone and the cookie expired
function M.logout(req)
  local sid = req.cookies[M.COOKIE]
  if type(sid) == "string" and #sid == 32 and sid:match("^%x+$") then
    app.db.query("delete from sessions where id = $1", sid)
  end
  return { status = 204, cookies = { { name = M.COOKIE, value = "", path = "/", max_age = 0 } } }
end

-- GET /api/me -> { name } or 401
function M.me(req)
  return H.json(200, { name = M.require(req) })
end

return M
