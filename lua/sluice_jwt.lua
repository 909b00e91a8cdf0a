-- sluice_jwt: app.jwt, JSON Web Tokens (RFC 7519) in the JWS compact form (RFC 7515), signed and
-- verified in C (core/jws.c: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA).
-- verify never trusts the token about how to check it: the algorithms come from opts.algs (or the
-- key types), "none" is never accepted, and a key is only used with algorithms of its own type.
local c = require "sluice.crypto"
local cjson = require "cjson.safe"
local crypto = require "sluice_crypto"

local jwt = {}

local json_encode -- set by sluice.lua (exact integers); cjson's as a fallback
function jwt._init(encode) json_encode = encode end

local DEFAULT_ALG = { oct = "HS256", RSA = "RS256", EC = { ["P-256"] = "ES256", ["P-384"] = "ES384", ["P-521"] = "ES512" }, OKP = "EdDSA" }
local ALGS_OF = {
  oct = { "HS256", "HS384", "HS512" },
  RSA = { "RS256", "RS384", "RS512", "PS256", "PS384", "PS512" },
  EC = { "ES256", "ES384", "ES512" },
  OKP = { "EdDSA" },
}

-- The JWT clock: the wall clock in seconds (core/lua_jwt.c: time(), plus the shift tests make
-- with app.jwt._clock_shift).
local clock = c.jwt_now

local function b64u(s) return c.b64encode(s, true) end

---------------------------------------------------------------------------------------------
-- keys: key objects, secrets, PEM strings, JWK tables and JWK sets, parsed once and cached
---------------------------------------------------------------------------------------------

local str_cache, str_count = {}, 0          -- PEM text / secret -> key object (bounded)
local tab_cache = setmetatable({}, { __mode = "k" })   -- JWK / JWKS table, key object -> parsed set

-- One entry of a key set: { key = key object, kid =, alg =, use = }.
local function entry_of(jwk)
  local k, err = c.key_jwk(jwk)
  if not k then return nil, err end
  return { key = k, kid = type(jwk.kid) == "string" and jwk.kid or nil,
           alg = type(jwk.alg) == "string" and jwk.alg or nil, use = jwk.use }
end

-- A JWK set table ({ keys = {...} }) -> { entries }; JWKs that do not parse are skipped (a set
-- may hold key types this build does not use), but an empty result is an error.
local function parse_set(t)
  local list, last = {}, nil
  for _, jwk in ipairs(t.keys) do
    if type(jwk) == "table" and jwk.use ~= "enc" then
      local e, err = entry_of(jwk)
      if e then list[#list + 1] = e else last = err end
    end
  end
  if #list == 0 then return nil, "JWK set has no usable signing key" .. (last and (" (" .. last .. ")") or "") end
  return list
end

-- keys (anything verify/sign accept) -> array of entries | nil, message
local function resolve(keys)
  local t = type(keys)
  if t == "userdata" then
    local hit = tab_cache[keys]
    if hit then return hit end
    if not crypto.is_key(keys) then error("app.jwt: not a key object", 3) end
    local list = { { key = keys } }
    tab_cache[keys] = list
    return list
  end
  if t == "string" then
    local hit = str_cache[keys]
    if hit then return hit end
    local list, err
    if keys:find("-----BEGIN", 1, true) then
      local k
      k, err = c.key_pem(keys)
      list = k and { { key = k } }
    elseif keys:match("^%s*{") then
      local jt = cjson.decode(keys)
      if type(jt) ~= "table" then return nil, "key: invalid JWK JSON" end
      list, err = resolve(jt)
      tab_cache[jt] = nil
    else
      list = { { key = c.key_secret(keys) } }
    end
    if not list then return nil, "key: " .. tostring(err) end
    if str_count >= 64 then str_cache, str_count = {}, 0 end
    str_cache[keys], str_count = list, str_count + 1
    return list
  end
  if t == "table" then
    if keys._jwks then return keys:entries() end       -- app.jwt.jwks(url) object
    local hit = tab_cache[keys]
    if hit then return hit end
    local list, err
    if type(keys.keys) == "table" then list, err = parse_set(keys)
    elseif keys.kty ~= nil then
      local e
      e, err = entry_of(keys)
      list = e and { e }
    else                                                 -- an array of keys of any kind
      list = {}
      for _, k in ipairs(keys) do
        local l, e2 = resolve(k)
        if not l then return nil, e2 end
        for _, x in ipairs(l) do list[#list + 1] = x end
      end
      if #list == 0 then err = "no keys given" end
    end
    if not list then return nil, err end
    tab_cache[keys] = list
    return list
  end
  error("app.jwt: keys must be a key object, a secret or PEM string, a JWK, a JWK set or a list of them", 3)
end

-- app.jwt.keys(keys) -> the parsed form (for load time: a bad key fails there, not per request)
function jwt.keys(keys)
  local list, err = resolve(keys)
  if not list then return nil, err end
  return list
end

---------------------------------------------------------------------------------------------
-- sign
---------------------------------------------------------------------------------------------

local function default_alg(k)
  local d = DEFAULT_ALG[k:kind()]
  if type(d) == "table" then
    local jwk = k:public_jwk()
    return d[jwk and jwk.crv or ""]
  end
  return d
end

-- app.jwt.sign(claims, key [, { alg =, kid =, typ =, expires_in = }]) -> token
function jwt.sign(claims, key, opts)
  opts = opts or {}
  if type(claims) ~= "table" then error("app.jwt.sign: claims must be a table", 2) end
  local list, err = resolve(key)
  if not list then error("app.jwt.sign: " .. err, 2) end
  local k = list[1].key
  local alg = opts.alg or default_alg(k)
  if type(alg) ~= "string" then error("app.jwt.sign: opts.alg must be a string", 2) end
  local why = k:fits(alg)
  if why then error("app.jwt.sign: " .. alg .. ": " .. why, 2) end
  if not k:private() then error("app.jwt.sign: cannot sign " .. alg .. " with a public key", 2) end
  if opts.expires_in ~= nil then
    if type(opts.expires_in) ~= "number" then error("app.jwt.sign: opts.expires_in must be seconds", 2) end
    local now = math.floor(opts.now or clock())
    local copy = {}
    for name, v in pairs(claims) do copy[name] = v end
    copy.iat = copy.iat or now
    copy.exp = now + math.floor(opts.expires_in)
    claims = copy
  end
  local kid = opts.kid or list[1].kid
  local header = '{"alg":"' .. alg .. '","typ":"' .. (opts.typ or "JWT") .. '"'
    .. (kid and (',"kid":' .. json_encode(tostring(kid))) or "") .. "}"
  local input = b64u(header) .. "." .. b64u(json_encode(claims))
  return input .. "." .. b64u(c.sign(k, alg, input))
end

---------------------------------------------------------------------------------------------
-- verify
---------------------------------------------------------------------------------------------

local function has(list, v)
  if type(list) == "string" then return list == v end
  for i = 1, #list do if list[i] == v then return true end end
  return false
end

-- The algorithms keys allow when opts.algs is not given: the default one of each key's type.
local function algs_of(entries)
  local set, out = {}, {}
  for _, e in ipairs(entries) do
    local a = e.alg or default_alg(e.key)
    if a and not set[a] then set[a] = true; out[#out + 1] = a end
  end
  return out
end

local function aud_ok(want, aud)
  if aud == nil then return false end
  if type(aud) == "string" then return has(want, aud) end
  if type(aud) ~= "table" then return false end
  for _, a in ipairs(aud) do
    if type(a) == "string" and has(want, a) then return true end
  end
  return false
end

-- Checks the registered claims; returns nil or the reason.
local function check_claims(cl, opts)
  local now = opts.now or clock()
  local leeway = opts.leeway or 30
  local exp, nbf, iat = cl.exp, cl.nbf, cl.iat
  if exp ~= nil then
    if type(exp) ~= "number" then return "malformed claims: exp" end
    if now > exp + leeway then return "expired" end
  end
  if nbf ~= nil then
    if type(nbf) ~= "number" then return "malformed claims: nbf" end
    if now + leeway < nbf then return "not yet valid" end
  end
  if iat ~= nil then
    if type(iat) ~= "number" then return "malformed claims: iat" end
    if now + leeway < iat then return "not yet valid" end
    if opts.max_age and now - iat > opts.max_age + leeway then return "expired" end
  end
  if opts.iss ~= nil and (type(cl.iss) ~= "string" or not has(opts.iss, cl.iss)) then return "wrong issuer" end
  if opts.aud ~= nil and not aud_ok(opts.aud, cl.aud) then return "wrong audience" end
  if opts.sub ~= nil and cl.sub ~= opts.sub then return "wrong subject" end
  if opts.require then
    for _, name in ipairs(opts.require) do
      if cl[name] == nil then return "missing claim: " .. name end
    end
  end
  return nil
end

local CACHE_MAX = 1024
local EMPTY = {}

-- Options objects made by app.jwt.options (userdata, core/lua_jwt.c) -> their plain copy, which
-- the Lua side reads. Read-only, so a verification that passed with one of them stays valid
-- until the claims' own times say otherwise: such tokens are kept in the object's own cache in
-- C (bounded, 1,024 per object), and presenting one again is a hash and a clock comparison.
local sealed = setmetatable({}, { __mode = "k" })
local jwt_hit, jwt_put, jwt_options = c.jwt_hit, c.jwt_put, c.jwt_options

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = deep_copy(x) end
  return t
end

-- app.jwt.options(opts) -> a read-only copy of verify's options. Use it for the options a route
-- passes on every request: a token verified before with the same options object then costs a
-- lookup in C and a clock read.
function jwt.options(o)
  if sealed[o] then o = sealed[o] end
  if type(o) ~= "table" then error("app.jwt.options: expected a table of verify options", 2) end
  local plain = deep_copy(o)
  local p = jwt_options(plain, type(plain.now) == "number" and plain.now or nil)
  sealed[p] = plain
  return p
end
local DEFAULT = c.jwt_default                 -- what verify uses without opts (jwt_hit knows it too)
sealed[DEFAULT] = c.jwt_plain(DEFAULT)

-- [from, to]: the times at which check_claims passes for cl under opts (apart from the time,
-- everything it checks depends on cl and opts only).
local function window(cl, opts)
  local leeway = opts.leeway or 30
  local from, to = -math.huge, math.huge
  local exp, nbf, iat = cl.exp, cl.nbf, cl.iat
  if type(exp) == "number" then to = exp + leeway end
  if type(iat) == "number" then
    from = iat - leeway
    if opts.max_age then to = math.min(to, iat + opts.max_age + leeway) end
  end
  if type(nbf) == "number" then from = math.max(from, nbf - leeway) end
  return from, to
end

-- A verification that passed under an options object p: kept in its C cache, for these keys
-- (and this parsed key list: a JWKS that rotates drops what its old keys verified).
local function keep(p, o, keys, entries, subject, kind, cl, h)
  if p and o.cache ~= false then
    local from, to = window(cl, o)
    jwt_put(p, keys, entries, type(keys) == "table" and keys._jwks == true, subject, kind, cl, h, from, to)
  end
end

-- A token this key set verified before (under this cache key), for options that are not an
-- options object: the algorithm and every claim are checked again, the signature and the JSON
-- are not redone. -> claims, header | false, reason | nil
local function from_cache(entries, ckey, opts)
  if opts.cache == false then return nil end
  local cache = entries.verified
  local hit = cache and cache[ckey]
  if not hit then return nil end
  if not has(opts.algs or hit.algs, hit.alg) then return nil end
  local why = check_claims(hit.cl, opts)
  if why then return false, why end
  return hit.cl, hit.h
end

local function remember(entries, ckey, cl, h, alg, algs)
  local cache = entries.verified
  if not cache or entries.nverified >= CACHE_MAX then
    cache = {}
    entries.verified, entries.nverified = cache, 0
  end
  cache[ckey] = { cl = cl, h = h, alg = alg, algs = algs }
  entries.nverified = entries.nverified + 1
end

-- The checks after a cache miss; remembers a success under ckey (the token, or the whole
-- Authorization header value for verify_bearer), and in p's cache when p is an options object.
local function verify_core(token, entries, keys, opts, ckey, p, kind)
  local hjson, pjson, ilen, sig = c.jws_split(token, opts.max_size or 8192)
  if not hjson then return nil, pjson end
  local h = cjson.decode(hjson)
  if type(h) ~= "table" or type(h.alg) ~= "string" then return nil, "malformed token" end
  local alg = h.alg
  if h.crit ~= nil then return nil, "unsupported header: crit" end
  local algs = opts.algs or algs_of(entries)
  if alg == "none" or not has(algs, alg) then return nil, "alg not allowed" end
  local kid = type(h.kid) == "string" and h.kid or nil
  local matched = false
  for pass = 1, 2 do
    for i = 1, #entries do
      local e = entries[i]
      if (not kid or not e.kid or e.kid == kid) and (not e.alg or e.alg == alg) and not e.key:fits(alg) then
        matched = true
        if c.jws_check(e.key, alg, token, ilen, sig) then
          local cl = cjson.decode(pjson)
          if type(cl) ~= "table" or pjson:match("^%s*%[") then return nil, "malformed token" end
          local why = check_claims(cl, opts)
          if why then return nil, why end
          if opts.cache ~= false then
            remember(entries, ckey, cl, h, alg, opts.algs or algs)
            keep(p, opts, keys, entries, ckey, kind, cl, h)
          end
          return cl, h
        end
      end
    end
    -- a key id no key has: a JWKS may have rotated, ask it again (rate-limited) once
    if matched or not (keys and type(keys) == "table" and keys._jwks) or pass == 2 then break end
    entries = keys:entries(true) or entries
  end
  if not matched then return nil, "no matching key" end
  return nil, "bad signature"
end

-- What a C cache miss leaves to do. -> claims, header | nil, reason
local function verify_slow(token, keys, opts)
  local o, p = sealed[opts], nil
  if o then p = opts else o = opts or EMPTY end
  if type(token) ~= "string" then return nil, "malformed token" end
  local entries, kerr = resolve(keys)
  if not entries then return nil, kerr end
  local cl, h = from_cache(entries, token, o)
  if cl then keep(p, o, keys, entries, token, 0, cl, h); return cl, h end
  if cl == false then return nil, h end
  return verify_core(token, entries, keys, o, token, p, 0)
end

-- app.jwt.verify(token, keys [, opts]) -> claims, header | nil, reason. opts: algs = { "RS256", ... }
-- (default: each key's own), aud = "x" | {...}, iss = "x" | {...}, sub =, leeway = 30 (s),
-- max_age = (s since iat), require = { "exp", ... }, max_size = 8192 (bytes), now = (unix s),
-- cache = false (no verified-token cache). Reasons: "token too large", "malformed token", "alg
-- not allowed", "unsupported header: crit", "no matching key", "bad signature", "expired", "not
-- yet valid", "wrong audience", "wrong issuer", "wrong subject", "missing claim: x", "malformed
-- claims: x", and a key set's own error (a JWKS that cannot be fetched).
function jwt.verify(token, keys, opts)
  local cl, h = jwt_hit(token, keys, opts)
  if cl then return cl, h end
  return verify_slow(token, keys, opts or DEFAULT)
end

-- One header's value as the client sent it: req:header (no req.headers built); a plain table
-- standing for a request (tests) has its headers field.
local function header(req, name)
  local f = req.header
  if f then return f(req, name) end
  local all = req.headers
  return all and all[name]
end

-- "Bearer <token>" -> token (any case for the scheme; no pattern over the token: this runs on
-- every request of an API, and verify rejects characters base64url does not have)
local function bearer_of(h)
  if type(h) ~= "string" or #h < 8 then return nil end
  local scheme = h:sub(1, 7)
  if scheme ~= "Bearer " and scheme:lower() ~= "bearer " then return nil end
  local t = h:sub(8)
  if t:byte(1) == 32 or t:byte(-1) == 32 then t = t:match("^ *(.-) *$") end
  return t ~= "" and t or nil
end

-- app.jwt.bearer(req) -> the token of an "Authorization: Bearer <token>" header, or nil
function jwt.bearer(req)
  return bearer_of(header(req, "authorization"))
end

local function bearer_slow(req, keys, opts)
  local o, p = sealed[opts], nil
  if o then p = opts else o = opts end
  local hv = header(req, "authorization")
  local token = bearer_of(hv)
  if not token then return nil, "no bearer token" end
  local entries, kerr = resolve(keys)
  if not entries then return nil, kerr end
  local cl, h = from_cache(entries, hv, o)         -- hv, "Bearer ...", is never a token itself
  if cl then keep(p, o, keys, entries, hv, 1, cl, h); return cl, h end
  if cl == false then return nil, h end
  return verify_core(token, entries, keys, o, hv, p, 1)
end

-- app.jwt.verify_bearer(req, keys [, opts]) -> claims, header | nil, reason: verify on the
-- request's bearer token ("no bearer token" without one). The cheap form for APIs: with an
-- options object, a header value seen before is looked up in C straight from the request, no
-- string made from it.
function jwt.verify_bearer(req, keys, opts)
  local cl, h = jwt_hit(req, keys, opts)
  if cl then return cl, h end
  return bearer_slow(req, keys, opts or DEFAULT)
end

-- app.jwt.cache_stats(opts) -> { entries =, bytes =, capacity =, hits =, misses = } of an options
-- object's verified-token cache.
function jwt.cache_stats(opts) return c.jwt_stats(opts or DEFAULT) end

-- app.jwt._clock_shift(seconds): moves app.jwt's clock forward (tests of expiry); returns the
-- total shift.
function jwt._clock_shift(s) return c.jwt_clock_shift(s) end

-- app.jwt.decode_unverified(token) -> header, claims | nil, reason. NOT a check: for logging
-- or picking a key set (by iss) before verify.
function jwt.decode_unverified(token)
  if type(token) ~= "string" then return nil, "malformed token" end
  local hjson, pjson = c.jws_split(token, 65536)
  if not hjson then return nil, pjson end
  local h, cl = cjson.decode(hjson), cjson.decode(pjson)
  if type(h) ~= "table" or type(cl) ~= "table" then return nil, "malformed token" end
  return h, cl
end

---------------------------------------------------------------------------------------------
-- JWKS over HTTP (through sluice.http, loaded on first use)
---------------------------------------------------------------------------------------------

local function http_client()
  local ok, http = pcall(require, "sluice.http")
  if ok and type(http) == "table" and (http.get or http.request) then return http end
  local app = package.loaded["sluice"]
  if app and type(app.http) == "table" and (app.http.get or app.http.request) then return app.http end
  return nil
end

local function fetch(url, timeout)
  local http = http_client()
  if not http then return nil, "app.jwt.jwks needs the outbound HTTP client (sluice.http), which this build lacks" end
  local res, err
  if http.get then res, err = http.get(url, { timeout = timeout, headers = { accept = "application/json" } })
  else res, err = http.request { method = "GET", url = url, timeout = timeout, headers = { accept = "application/json" } } end
  if not res then return nil, "JWKS " .. url .. ": " .. tostring(err) end
  if res.status ~= 200 then return nil, "JWKS " .. url .. ": status " .. tostring(res.status) end
  local t = cjson.decode(res.body or "")
  if type(t) ~= "table" or type(t.keys) ~= "table" then return nil, "JWKS " .. url .. ": not a JWK set" end
  return parse_set(t)
end

local Jwks = {}
Jwks.__index = Jwks

-- jwks:entries([refresh]) -> entries | nil, message. Cached for ttl seconds; a refresh for an
-- unknown kid happens at most every min_refresh seconds; a failed fetch keeps the old keys.
function Jwks:entries(refresh)
  local now = clock()
  if self.list and not refresh and now - self.fetched < self.ttl then return self.list end
  if self.list and now - self.tried < self.min_refresh then return self.list end
  self.tried = now
  local list, err = fetch(self.url, self.timeout)
  if list then
    self.list, self.fetched = list, now
    return list
  end
  if self.list then return self.list end
  return nil, err
end

-- app.jwt.jwks(url [, { ttl = 300, min_refresh = 30, timeout = 5 }]) -> a key set to pass to
-- verify. Keys are fetched on the first verify (inside a handler: the fetch waits, the worker
-- serves others), kept for ttl seconds per worker, fetched again early when a token names a kid
-- the set lacks.
function jwt.jwks(url, opts)
  if type(url) ~= "string" or not url:match("^https?://") then error("app.jwt.jwks: url must be http(s)://...", 2) end
  opts = opts or {}
  return setmetatable({ _jwks = true, url = url, ttl = opts.ttl or 300, min_refresh = opts.min_refresh or 30,
                        timeout = opts.timeout or 5, fetched = 0, tried = -math.huge }, Jwks)
end

return jwt
