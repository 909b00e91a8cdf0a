-- sluice_crypto: app.crypto and app.password (lua/sluice.lua puts them on app). The C primitives
-- are sluice.crypto and sluice.password (core/lua_crypto.c). Digests and MACs are raw bytes: wrap
-- them in app.crypto.hex or base64url for text. Misuse raises; bad input returns nil, message.
local c = require "sluice.crypto"

local crypto = {}

local function str(v, what, level)
  if type(v) ~= "string" then error(what .. " must be a string (got " .. type(v) .. ")", level + 1) end
  return v
end

function crypto.sha256(s) return c.hash("sha256", str(s, "app.crypto.sha256: data", 2)) end
function crypto.sha1(s) return c.hash("sha1", str(s, "app.crypto.sha1: data", 2)) end
function crypto.sha512(s) return c.hash("sha512", str(s, "app.crypto.sha512: data", 2)) end
-- app.crypto.hash("sha384", s)
function crypto.hash(alg, s) return c.hash(alg, str(s, "app.crypto.hash: data", 2)) end

-- app.crypto.hmac("sha256", key, message) -> raw MAC bytes
function crypto.hmac(alg, key, msg)
  return c.hmac(alg, str(key, "app.crypto.hmac: key", 2), str(msg, "app.crypto.hmac: message", 2))
end

-- n bytes from the OS CSPRNG (getrandom)
function crypto.random_bytes(n)
  if type(n) ~= "number" then error("app.crypto.random_bytes: n must be a number", 2) end
  return c.random(n)
end

-- true when a == b, in time that does not depend on where they differ (for MACs and tokens)
function crypto.constant_time_equal(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then return false end
  return c.equal(a, b)
end

function crypto.base64_encode(s) return c.b64encode(str(s, "app.crypto.base64_encode: data", 2), false) end
function crypto.base64_decode(s) return c.b64decode(str(s, "app.crypto.base64_decode: text", 2), false) end
function crypto.base64url_encode(s) return c.b64encode(str(s, "app.crypto.base64url_encode: data", 2), true) end
function crypto.base64url_decode(s) return c.b64decode(str(s, "app.crypto.base64url_decode: text", 2), true) end
function crypto.hex(s) return c.hexencode(str(s, "app.crypto.hex: data", 2)) end
crypto.hex_encode = crypto.hex
function crypto.hex_decode(s) return c.hexdecode(str(s, "app.crypto.hex_decode: text", 2)) end

-- app.crypto.key(pem | jwk_table | jwk_json) -> key | nil, message. A key object is what
-- app.jwt signs and verifies with; parse once (at load time) and reuse it.
function crypto.key(k)
  if type(k) == "table" then return c.key_jwk(k) end
  if type(k) ~= "string" then error("app.crypto.key: expected a PEM string or a JWK table", 2) end
  if k:match("^%s*{") then
    local ok, t = pcall(require("cjson").decode, k)
    if not ok or type(t) ~= "table" then return nil, "JWK: invalid JSON" end
    return c.key_jwk(t)
  end
  return c.key_pem(k)
end

-- app.crypto.secret(bytes) -> an HMAC key object (HS256/384/512)
function crypto.secret(s) return c.key_secret(str(s, "app.crypto.secret: secret", 2)) end

function crypto.is_key(v)
  return type(v) == "userdata" and getmetatable(v) == "crypto key"
end

-- Webhook signatures, the Stripe/GitHub pattern: header "t=<unix time>,v1=<hex HMAC-SHA256 of
-- "<t>.<body>">". sign(secret, body [, t]) -> header; verify(secret, body, header [, tolerance])
-- -> true | false, reason. Several v1= entries (a secret being rotated) are all tried.
local webhook = {}
crypto.webhook = webhook

function webhook.sign(secret, body, t)
  str(secret, "app.crypto.webhook.sign: secret", 2)
  str(body, "app.crypto.webhook.sign: body", 2)
  t = math.floor(t or os.time())
  return "t=" .. t .. ",v1=" .. c.hexencode(c.hmac("sha256", secret, t .. "." .. body))
end

function webhook.verify(secret, body, header, tolerance, now)
  str(secret, "app.crypto.webhook.verify: secret", 2)
  if type(body) ~= "string" or type(header) ~= "string" then return false, "missing signature" end
  if #header > 4096 then return false, "malformed signature header" end
  local t, sigs = nil, {}
  for k, v in header:gmatch("([^=,%s]+)=([^,%s]*)") do
    if k == "t" then t = tonumber(v:match("^%d+$")) elseif k == "v1" then sigs[#sigs + 1] = v:lower() end
  end
  if not t or #sigs == 0 then return false, "malformed signature header" end
  tolerance = tolerance or 300
  if math.abs((now or os.time()) - t) > tolerance then return false, "timestamp outside the tolerance" end
  local want = c.hexencode(c.hmac("sha256", secret, t .. "." .. body))
  for _, s in ipairs(sigs) do
    if c.equal(s, want) then return true end
  end
  return false, "bad signature"
end

-- app.password: Argon2id (libsodium) with password.* from config.lua, hashed on the worker's
-- thread pool: the handler waits, the worker keeps serving.
local password = {}

local function params(cfg)
  local pc = (cfg and cfg.password) or {}
  return pc.ops_limit or 2, (pc.mem_limit_kb or 19456) * 1024, pc.threads or 2
end

function crypto._password(config)
  local p = require "sluice.password"
  -- app.password.hash(pw) -> PHC string "$argon2id$v=19$m=...,t=...,p=1$salt$hash" | nil, msg
  function password.hash(pw)
    if type(pw) ~= "string" then error("app.password.hash: password must be a string", 2) end
    local ops, mem, threads = params(config)
    return p.hash(pw, ops, mem, threads)
  end
  -- app.password.verify(pw, hash) -> boolean (any Argon2id/Argon2i PHC string: its own parameters)
  function password.verify(pw, hash)
    if type(pw) ~= "string" or type(hash) ~= "string" then return false end
    local _, _, threads = params(config)
    return p.verify(pw, hash, threads)
  end
  -- app.password.needs_rehash(hash) -> true when it was made with other parameters than config's
  function password.needs_rehash(hash)
    if type(hash) ~= "string" then return true end
    local ops, mem = params(config)
    return p.needs_rehash(hash, ops, mem)
  end
  return password
end

return crypto
