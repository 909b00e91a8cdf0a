-- micro.lua for bench/toolkit.sh: HMAC and JWT verify costs in sluice's Lua, run by
-- `sluice lua micro.lua <keys.json> [jit|nojit]`. Prints "<name> <microseconds per operation>".
-- nojit: the interpreter, as handlers run with the default limits.script_timeout (JIT off).
local keyfile, mode = arg[1], arg[2] or "jit"
if mode == "nojit" then jit.off() end
package.path = arg[0]:match("^(.*/)") .. "../../lua/?.lua;" .. package.path
local c = require "sluice.crypto"
local cjson = require "cjson"
local jwt = require "sluice_jwt"
jwt._init(cjson.encode)

local f = assert(io.open(keyfile))
local K = cjson.decode(f:read("*a"))
f:close()
local secret = K.secret
local msg = string.rep("m", 200)

local function bench(name, n, fn)
  for _ = 1, math.floor(n / 10) do fn() end                    -- warm up
  local t0 = os.clock()
  for _ = 1, n do fn() end
  print(string.format("%s %.3f", name, (os.clock() - t0) / n * 1e6))
end

bench("hmac_sha256_200B", 200000, function() return c.hmac("sha256", secret, msg) end)
local claims = K.claims
local hs = K.tokens.HS256
local hkey = c.key_secret(secret)
local opts_nc = { cache = false }
assert(jwt.verify(hs, hkey, opts_nc))
bench("jwt_hs256_verify", 100000, function() return jwt.verify(hs, hkey, opts_nc) end)
assert(jwt.verify(hs, hkey))
bench("jwt_hs256_verify_cached", 200000, function() return jwt.verify(hs, hkey) end)
for _, alg in ipairs({ "RS256", "ES256", "EdDSA" }) do
  local pub = assert(c.key_pem(K.public[alg]))
  local tok = K.tokens[alg]
  assert(jwt.verify(tok, pub, { algs = { alg }, cache = false }), alg)
  local o = { algs = { alg }, cache = false }
  bench("jwt_" .. alg:lower() .. "_verify", alg == "RS256" and 20000 or 5000, function() return jwt.verify(tok, pub, o) end)
end
local priv = assert(c.key_pem(K.private.RS256))
bench("jwt_rs256_sign", 500, function() return jwt.sign(claims, priv) end)
