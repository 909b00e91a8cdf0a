-- board_auth: accounts and who is asking. Accounts have Argon2id passwords (app.password, hashed
-- off the event loop). A request names its user with
--   * the `board_session` cookie that POST /api/signup and /api/login set (browsers; EventSource
--     sends it too): a signed id of a row in the sessions table;
--   * `Authorization: Bearer <token>`: the JWT that signup and login return (API clients, scripts,
--     the specs), HS256 for one hour, checked without a database query;
--   * `X-User: name` only when config.lua sets app.trust_x_user = true: behind an SSO proxy that
--     sets the header and strips it from clients, or for the load test in bench/seed-scenario.
local app = require "sluice"
local H = require "board_http"

local M = {}

M.COOKIE = "board_session"
local TTL = 7 * 24 * 3600                    -- session cookie
local TOKEN_TTL = 3600                       -- bearer token
local AUD = "board"
local cfg = app.config.app or {}
local TRUST_X_USER = cfg.trust_x_user == true

-- The signing key: session.keys[1] from config.lua (SLUICE_SESSION_KEYS). The shipped config has a
-- development default; a production server refuses to start with it.
local DEV_KEY = "dev-only-board-key-change-me-0123456789"
local KEY = assert((app.config.session.keys or {})[1], "board_auth: config.lua must set session.keys")
if KEY == DEV_KEY and app.config.env == "production" then
  error("board_auth: set SLUICE_SESSION_KEYS (head -c 32 /dev/urandom | base64): the development key must not sign production sessions", 0)
end
local TOKEN_KEY = app.crypto.secret(KEY)

local NAME_RULE = "must be 1..32 characters: letters, digits, '_', '.' or '-'"
local NAME = { type = "string", required = true, min_length = 1, max_length = 32, pattern = "^[%w_.%-]+$", message = NAME_RULE }
local SIGNUP = { fields = { name = NAME, password = { type = "string", required = true, min_length = 8, max_length = 256 } } }
local LOGIN = { fields = { name = { type = "string", required = true, max_length = 64 },
                           password = { type = "string", required = true, max_length = 256 } } }

function M.valid_name(s)
  return type(s) == "string" and #s >= 1 and #s <= 32 and s:match("^[%w_.%-]+$") ~= nil
end

-- Made once at load time: an options object keeps a cache of verified tokens (docs/toolkit.md).
local TOKEN_CHECK = app.jwt.options({ algs = { "HS256" }, aud = AUD })

-- A bearer token for name (what signup and login return; the specs use it too).
function M.token_for(name)
  return app.jwt.sign({ sub = name, aud = AUD }, TOKEN_KEY, { expires_in = TOKEN_TTL })
end

-- M.user(req) -> name or nil. Credentials that are present but wrong are an error (401/400), not
-- an anonymous request.
function M.user(req)
  local xu = req.headers["x-user"]
  if xu ~= nil and TRUST_X_USER then
    if not M.valid_name(xu) then H.fail(400, "x-user: " .. NAME_RULE) end
    return xu
  end
  if req.headers.authorization ~= nil then
    local token = app.jwt.bearer(req)
    if not token then H.fail(401, "authorization: expected Bearer <token>") end
    local claims, why = app.jwt.verify(token, TOKEN_KEY, TOKEN_CHECK)
    if not claims then H.fail(401, "token: " .. why) end
    if not M.valid_name(claims.sub) then H.fail(401, "token: no user") end
    return claims.sub
  end
  local sid = app.session.unsign(req.cookies[M.COOKIE] or "", M.COOKIE)
  if sid and #sid == 32 and sid:match("^%x+$") then
    local rows = app.db.query("select user_name from sessions where id = $1 and expires_at > now()", sid)
    if rows[1] then return rows[1].user_name end
  end
  return nil
end

function M.require(req)
  local u = M.user(req)
  if not u then H.fail(401, "login required: sign up or log in (POST /api/signup, /api/login) first") end
  return u
end

-- A new session row and the signed cookie naming it.
local function start_session(name)
  local sid = app.crypto.hex(app.crypto.random_bytes(16))
  app.db.query("delete from sessions where expires_at < now()")
  app.db.query("insert into sessions (id, user_name, expires_at) values ($1, $2, now() + make_interval(secs => $3))",
    sid, name, TTL)
  return app.session.cookie(M.COOKIE, app.session.sign(sid, M.COOKIE), { max_age = TTL })
end

local function signed_in(status, name)
  return H.json(status, { name = name, token = M.token_for(name), expires_in = TOKEN_TTL },
    { cookies = { start_session(name) } })
end

-- POST /api/signup { name, password } -> 201 { name, token, expires_in } and a session cookie
function M.signup(req)
  local b = H.input(req, SIGNUP)
  local hash, err = app.password.hash(b.password)
  if not hash then H.fail(503, "signup: " .. err) end
  local row = app.db.query("insert into users (name, password_hash) values ($1, $2) on conflict do nothing returning name",
    b.name, hash)[1]
  if not row then H.fail(409, "name: already taken") end
  app.log("info", "signup", { user = b.name })
  return signed_in(201, b.name)
end

-- A hash to verify against when the name is unknown, so both answers take as long.
local dummy

-- POST /api/login { name, password } -> 200 { name, token, expires_in } and a session cookie;
-- 401 for an unknown name or a wrong password alike
function M.login(req)
  local b = H.input(req, LOGIN)
  local row = app.db.query("select password_hash from users where name = $1", b.name)[1]
  if not row then dummy = dummy or app.password.hash("no such user") end
  local ok = app.password.verify(b.password, row and row.password_hash or dummy)
  if not (row and ok) then
    app.log("warn", "login failed", { user = b.name, known = row ~= nil })
    H.fail(401, "wrong name or password")
  end
  if app.password.needs_rehash(row.password_hash) then   -- parameters raised in config.lua since
    local h = app.password.hash(b.password)
    if h then app.db.query("update users set password_hash = $2 where name = $1", b.name, h) end
  end
  app.log("info", "login", { user = b.name })
  return signed_in(200, b.name)
end

-- POST /api/logout -> 204, the session is gone and the cookie expired
function M.logout(req)
  local sid = app.session.unsign(req.cookies[M.COOKIE] or "", M.COOKIE)
  if sid and #sid == 32 and sid:match("^%x+$") then
    app.db.query("delete from sessions where id = $1", sid)
  end
  return { status = 204, cookies = { app.session.cookie(M.COOKIE, "", { max_age = 0 }) } }
end

-- GET /api/me -> { name } or 401
function M.me(req)
  return H.json(200, { name = M.require(req) })
end

return M
