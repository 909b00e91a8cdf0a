-- sluice_session: app.session (sessions in app.cache or in a signed cookie) and app.csrf, both
-- keyed by session.keys from config.lua (docs/toolkit.md#sessions-and-csrf). Signing is HMAC-SHA256 with the first
-- key; every key verifies, so a key is rotated by putting the new one first for a while.
local c = require "sluice.crypto"
local cjson = require "cjson.safe"

local M = {}

-- M.new(app) -> session, csrf (they need app.config, app.cache and app.before)
function M.new(app)
  local cfg = app.config.session or {}
  local keys = cfg.keys
  local COOKIE = cfg.cookie or "sluice_sid"
  local session, csrf = {}, {}
  session._clock = os.time             -- wall clock of cookie expiry (tests may replace it)

  local function need_keys(what, level)
    if not keys or #keys == 0 then
      error(what .. " needs session.keys in config.lua (or SLUICE_SESSION_KEYS): head -c 32 /dev/urandom | base64", level + 1)
    end
  end

  local function mac(key, name, value)
    return c.b64encode(c.hmac("sha256", key, name .. "=" .. value), true)
  end

  -- app.session.sign(value [, name]) -> "value.signature" (the cookie name is signed too, so a
  -- value cannot be moved to another cookie)
  function session.sign(value, name)
    need_keys("app.session.sign", 2)
    if type(value) ~= "string" then error("app.session.sign: value must be a string", 2) end
    return value .. "." .. mac(keys[1], name or COOKIE, value)
  end

  -- app.session.unsign(signed [, name]) -> value | nil (signature checked with every key)
  function session.unsign(signed, name)
    need_keys("app.session.unsign", 2)
    if type(signed) ~= "string" or #signed > 4096 then return nil end
    local value, sig = signed:match("^(.*)%.([%w_-]+)$")
    if not value then return nil end
    name = name or COOKIE
    for i = 1, #keys do
      if c.equal(mac(keys[i], name, value), sig) then return value end
    end
    return nil
  end

  -- app.session.cookie(name, value [, { max_age =, httponly =, path = }]) -> a cookie table with
  -- session.secure / session.samesite from config
  function session.cookie(name, value, o)
    o = o or {}
    local ck = { name = name, value = value, path = o.path or "/", httponly = o.httponly ~= false,
                 samesite = o.samesite or cfg.samesite or "Lax", max_age = o.max_age }
    if o.secure ~= nil then ck.secure = o.secure else ck.secure = cfg.secure end
    return ck
  end

  local function new_sid() return c.hexencode(c.random(16)) end

  local function read_sid(raw)
    if type(raw) ~= "string" then return nil end
    if keys then raw = session.unsign(raw) end           -- with keys, only a signed id counts
    if raw and #raw == 32 and raw:match("^%x+$") then return raw end
    return nil
  end

  -- cookie store: base64url(JSON).expiry, signed
  local function read_cookie(raw, name)
    local v = raw and session.unsign(raw, name)
    if not v then return nil end
    local body, exp = v:match("^([%w_-]*)%.(%d+)$")
    if not body or tonumber(exp) < session._clock() then return nil end
    local data = cjson.decode(c.b64decode(body, true) or "")
    return type(data) == "table" and data or nil
  end

  -- data, sid = app.session.load(req [, cookie]): {} and nil when there is no valid session
  function session.load(req, name)
    name = name or COOKIE
    local raw = req.cookies[name]
    if cfg.store == "cookie" then
      local data = read_cookie(raw, name)
      if data then return data, raw end
      return {}, nil
    end
    local sid = read_sid(raw)
    if sid then
      local data = app.cache.get("sess:" .. sid)
      if type(data) == "table" then return data, sid end
    end
    return {}, nil
  end

  -- sid, cookie = app.session.save(sid, data [, ttl [, cookie]]): a new id when sid is nil; put
  -- the cookie in the response's cookies. nil, message when the store fails.
  function session.save(sid, data, ttl, name)
    name = name or COOKIE
    ttl = ttl or cfg.ttl or 86400
    data = data or {}
    if cfg.store == "cookie" then
      local json = app.json.encode(data)
      local value = session.sign(c.b64encode(json, true) .. "." .. math.floor(session._clock() + ttl), name)
      if #value + #name > 4000 then return nil, "app.session: data too large for a cookie (4 KB)" end
      return value, session.cookie(name, value, { max_age = ttl })
    end
    if not (type(sid) == "string" and #sid == 32 and sid:match("^%x+$")) then sid = new_sid() end
    local ok, err = app.cache.set("sess:" .. sid, data, ttl)
    if not ok then return nil, err end
    return sid, session.cookie(name, keys and session.sign(sid, name) or sid, { max_age = ttl })
  end

  -- app.session.destroy(sid [, cookie]) -> the expired cookie to send (logout)
  function session.destroy(sid, name)
    if cfg.store ~= "cookie" and type(sid) == "string" and #sid == 32 and sid:match("^%x+$") then
      app.cache.del("sess:" .. sid)
    end
    return session.cookie(name or COOKIE, "", { max_age = 0 })
  end

  ---------------------------------------------------------------------------------------------
  -- CSRF: a signed random value in a cookie, and a token derived from it (and from the session
  -- cookie, so a value planted from another site's session does not validate). The page gets the
  -- token (HTML or JSON) and sends it back in X-CSRF-Token or the _csrf form field.
  ---------------------------------------------------------------------------------------------
  local CSRF_COOKIE, HEADER, FIELD = "sluice_csrf", "x-csrf-token", "_csrf"
  local SAFE = { GET = true, HEAD = true, OPTIONS = true }

  local function csrf_token_of(value, req)
    local bind = req.cookies[csrf.bind or COOKIE] or ""
    return c.b64encode(c.hmac("sha256", keys[1], "csrf|" .. value .. "|" .. bind), true)
  end

  local function csrf_value(req)
    local v = session.unsign(req.cookies[CSRF_COOKIE] or "", CSRF_COOKIE)
    if v and #v == 22 then return v end
    return nil
  end

  -- app.csrf.token(req) -> token, cookie|nil: send the token with the page; when cookie is not
  -- nil, add it to the response's cookies (the first visit, or a cookie that was tampered with)
  function csrf.token(req)
    need_keys("app.csrf", 2)
    local v = csrf_value(req)
    local cookie
    if not v then
      v = c.b64encode(c.random(16), true)
      cookie = session.cookie(CSRF_COOKIE, session.sign(v, CSRF_COOKIE), { max_age = cfg.ttl })
      req.cookies[CSRF_COOKIE] = cookie.value              -- later calls in this request agree
    end
    return csrf_token_of(v, req), cookie
  end

  -- app.csrf.check(req) -> true | false, reason: GET, HEAD and OPTIONS always pass
  function csrf.check(req)
    need_keys("app.csrf", 2)
    if SAFE[req.method] then return true end
    local v = csrf_value(req)
    if not v then return false, "csrf cookie missing or invalid" end
    local sent = req.headers[HEADER]
    if sent == nil then
      local ct = req.headers["content-type"] or ""
      if ct:find("^application/x%-www%-form%-urlencoded") then sent = req.form[FIELD] end
    end
    if type(sent) ~= "string" then return false, "csrf token missing" end
    if not c.equal(csrf_token_of(v, req), sent) then
      for i = 2, #keys do                                  -- a token from before a key rotation
        local old = c.b64encode(c.hmac("sha256", keys[i], "csrf|" .. v .. "|" .. (req.cookies[csrf.bind or COOKIE] or "")), true)
        if c.equal(old, sent) then return true end
      end
      return false, "csrf token invalid"
    end
    return true
  end

  -- app.csrf.protect([prefix,] [{ skip = function(req) -> true to let it through, bind = cookie }])
  -- answers 403 { error = "csrf: ..." } to unsafe requests under prefix without a valid token
  function csrf.protect(prefix, o)
    if type(prefix) == "table" then prefix, o = nil, prefix end
    o = o or {}
    need_keys("app.csrf.protect", 2)
    if o.bind then csrf.bind = o.bind end
    app.before(prefix or "/", function(req)
      if SAFE[req.method] or (o.skip and o.skip(req)) then return nil end
      local ok, why = csrf.check(req)
      if not ok then return { status = 403, json = { error = "csrf: " .. why, status = 403 } } end
    end)
  end

  return session, csrf
end

return M
