-- mkkeys.lua for bench/toolkit.sh: writes the keys and tokens both micro benchmarks verify
-- (`sluice lua mkkeys.lua <out.json> <pem dir>`; the PEM files come from openssl genpkey).
local out, dir = arg[1], arg[2]
package.path = arg[0]:match("^(.*/)") .. "../../lua/?.lua;" .. package.path
local c = require "sluice.crypto"
local cjson = require "cjson"
local jwt = require "sluice_jwt"
jwt._init(cjson.encode)
local function read(p) local f = assert(io.open(p)); local s = f:read("*a"); f:close(); return s end
local K = { secret = "bench-secret-of-at-least-thirty-two-bytes", private = {}, public = {}, tokens = {},
            claims = { sub = "user-1234", aud = "api", iss = "https://id.example", iat = 1764000000, exp = 4102444800, scope = "read write" } }
K.tokens.HS256 = jwt.sign(K.claims, K.secret)
for _, alg in ipairs({ "RS256", "ES256", "EdDSA" }) do
  K.private[alg] = read(dir .. "/" .. alg .. ".pem")
  K.public[alg] = read(dir .. "/" .. alg .. ".pub")
  K.tokens[alg] = jwt.sign(K.claims, assert(c.key_pem(K.private[alg])), { alg = alg })
end
local f = assert(io.open(out, "w"))
f:write(cjson.encode(K))
f:close()
