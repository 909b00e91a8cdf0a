-- The handler toolkit: app.crypto known answers, app.jwt (RFC 7515/8037 examples and the classic
-- attacks), app.password (Argon2id off the loop, argon2 CLI hashes), app.validate with nested
-- errors and app.error(422, ...), sessions with rotated keys, CSRF, webhooks, SSE authorized by a
-- JWT. Runs with tests/features/toolkit/config.lua.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)")
local H = setfenv(assert(loadfile(dir .. "../helpers.lua")), getfenv(1))()
local V = dofile(dir .. "vectors.lua")
local app = require "sluice"
local crypto, jwt = app.crypto, app.jwt
local hex = crypto.hex

local function post(path, body, headers) return request("POST", path, { json = body, headers = headers }) end
local function b64u(s) return crypto.base64url_encode(s) end

-- a token from parts (for the attacks: whatever header the attacker likes)
local function forge(header, claims, sig)
  return b64u(header) .. "." .. b64u(app.json.encode(claims)) .. "." .. (sig or "")
end

describe("app.crypto", function()
  it("hashes with the FIPS 180 examples", function()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(crypto.sha256("abc")))
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", hex(crypto.sha256("")))
    assert.are.equal("a9993e364706816aba3e25717850c26c9cd0d89d", hex(crypto.sha1("abc")))
    assert.are.equal("cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
      hex(crypto.hash("sha384", "abc")))
    assert.are.equal(64, #crypto.sha512("abc"))
  end)

  it("computes HMAC as RFC 4231 says", function()
    assert.are.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      hex(crypto.hmac("sha256", "Jefe", "what do ya want for nothing?")))
    assert.are.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      hex(crypto.hmac("sha256", string.rep("\11", 20), "Hi There")))
    assert.has_error(function() crypto.hmac("md5", "k", "m") end, "bad argument #1 to 'hmac' (digest must be sha1, sha256, sha384 or sha512)")
    assert.has_error(function() crypto.hmac("sha256", nil, "m") end, "app.crypto.hmac: key must be a string (got nil)")
  end)

  it("encodes base64 and base64url as RFC 4648 section 10", function()
    local cases = { { "", "", "" }, { "f", "Zg==", "Zg" }, { "fo", "Zm8=", "Zm8" }, { "foo", "Zm9v", "Zm9v" },
                    { "foob", "Zm9vYg==", "Zm9vYg" }, { "fooba", "Zm9vYmE=", "Zm9vYmE" }, { "foobar", "Zm9vYmFy", "Zm9vYmFy" } }
    for _, c in ipairs(cases) do
      assert.are.equal(c[2], crypto.base64_encode(c[1]))
      assert.are.equal(c[3], crypto.base64url_encode(c[1]))
      assert.are.equal(c[1], crypto.base64_decode(c[2]))
      assert.are.equal(c[1], crypto.base64url_decode(c[3]))
    end
    assert.are.equal("-_8", crypto.base64url_encode("\251\255"))
    assert.are.equal("+/8=", crypto.base64_encode("\251\255"))
    assert.are.equal("666f6f626172", crypto.hex("foobar"))
    assert.are.equal("foobar", crypto.hex_decode("666F6F626172"))
  end)

  it("returns nil and a message for input that is not base64 or hex", function()
    assert.are.same({ nil, "invalid base64" }, { crypto.base64_decode("Zm9v!") })
    assert.are.same({ nil, "invalid base64url" }, { crypto.base64url_decode("+/8") })
    assert.are.same({ nil, "invalid hex" }, { crypto.hex_decode("abc") })
  end)

  it("draws random bytes and compares in constant time", function()
    local a, b = crypto.random_bytes(32), crypto.random_bytes(32)
    assert.are.equal(32, #a)
    assert.are_not.equal(a, b)
    assert.are.equal(0, #crypto.random_bytes(0))
    assert.has_error(function() crypto.random_bytes(-1) end)
    assert.is_true(crypto.constant_time_equal("abc", "abc"))
    assert.is_false(crypto.constant_time_equal("abc", "abd"))
    assert.is_false(crypto.constant_time_equal("abc", "ab"))
    assert.is_false(crypto.constant_time_equal("abc", nil))
  end)

  it("signs and verifies webhooks the t=..,v1=.. way", function()
    local body = '{"event":"paid"}'
    local sig = crypto.webhook.sign("whsec_test_secret", body, os.time())
    assert.matches("^t=%d+,v1=%x+$", sig)
    local res = request("POST", "/webhook", { body = body, headers = { ["x-signature"] = sig } })
    assert.are.equal(200, res.status, res.body)
    res = request("POST", "/webhook", { body = body .. " ", headers = { ["x-signature"] = sig } })
    assert.are.equal(400, res.status)
    assert.are.same({ error = "bad signature" }, res:json())
    local old = crypto.webhook.sign("whsec_test_secret", body, os.time() - 3600)
    assert.are.same({ error = "timestamp outside the tolerance" },
      request("POST", "/webhook", { body = body, headers = { ["x-signature"] = old } }):json())
    assert.are.same({ error = "missing signature" }, request("POST", "/webhook", { body = body }):json())
    -- a secret being rotated: the header carries a signature for each, one must match
    local t = os.time()
    local two = crypto.webhook.sign("other", body, t) .. "," .. crypto.webhook.sign("whsec_test_secret", body, t):match("v1=%x+")
    assert.is_true(crypto.webhook.verify("whsec_test_secret", body, two))
    H.still_works()
  end)

  it("parses keys from PEM, JWK tables and JWK JSON", function()
    local k = assert(crypto.key(V.rsa_public))
    assert.are.equal("RSA", k:kind())
    assert.are.equal(2048, k:bits())
    assert.is_false(k:private())
    assert.are.same({ kty = "RSA", n = V.rsa_public.n, e = "AQAB" }, k:public_jwk())
    local e = assert(crypto.key(app.json.encode(V.ec_private)))
    assert.is_true(e:private())
    assert.are.same({ kty = "EC", crv = "P-256", x = V.ec_public.x, y = V.ec_public.y }, e:public_jwk())
    assert.are.same({ nil, "not a PEM key or certificate (or an encrypted one)" }, { crypto.key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") })
    assert.are.same({ nil, "EC JWK: crv must be P-256, P-384 or P-521" }, { crypto.key({ kty = "EC", crv = "P-192", x = "AA", y = "AA" }) })
    assert.are.same({ nil, "JWK member n is not base64url (or too long)" }, { crypto.key({ kty = "RSA", n = "!!", e = "AQAB" }) })
  end)
end)

describe("app.jwt", function()
  local before_exp = { now = V.exp - 60 }

  it("verifies the RFC 7515 appendix A tokens", function()
    local cl = assert(jwt.verify(V.a1, V.a1_jwk, before_exp))
    assert.are.equal("joe", cl.iss)
    assert.is_true(cl["http://example.com/is_root"])
    assert.are.equal("joe", assert(jwt.verify(V.a2, V.rsa_public, before_exp)).iss)
    assert.are.equal("joe", assert(jwt.verify(V.a3, V.ec_public, before_exp)).iss)
    -- and after exp they are expired
    assert.are.same({ nil, "expired" }, { jwt.verify(V.a1, V.a1_jwk) })
  end)

  it("signs RS256 exactly as RFC 7515 A.2 and EdDSA as RFC 8037 A.4", function()
    local k = assert(crypto.key(V.rsa_private))
    local input = V.a2:match("^([^.]+%.[^.]+)")
    assert.are.equal(V.a2:match("[^.]+$"), b64u(require("sluice.crypto").sign(k, "RS256", input)))
    local ed = assert(crypto.key(V.ed_private))
    assert.are.equal(V.ed_sig, b64u(require("sluice.crypto").sign(ed, "EdDSA", V.ed_input)))
  end)

  it("round-trips claims with every key type", function()
    for _, c in ipairs({ { V.secret, "HS256" }, { V.rsa_private, "RS256" }, { V.rsa_private, "PS256" },
                         { V.ec_private, "ES256" }, { V.ed_private, "EdDSA" } }) do
      local tok = jwt.sign({ sub = "u1", n = 42 }, c[1], { alg = c[2], expires_in = 60 })
      local h = jwt.decode_unverified(tok)
      assert.are.equal(c[2], h.alg)
      local pub = type(c[1]) == "table" and crypto.key(c[1]):public_jwk() or c[1]
      if type(pub) == "table" then pub.kid = c[1].kid end
      local cl, err = jwt.verify(tok, pub, { algs = { c[2] } })
      assert.is_table(cl, c[2] .. ": " .. tostring(err))
      assert.are.equal("u1", cl.sub)
      assert.are.equal(42, cl.n)
      assert.are.equal(cl.iat + 60, cl.exp)
    end
  end)

  it("never accepts alg none, in any spelling", function()
    local claims = { sub = "admin" }
    for _, alg in ipairs({ "none", "None", "NONE", "nOnE" }) do
      local tok = forge('{"alg":"' .. alg .. '","typ":"JWT"}', claims)
      assert.are.same({ nil, "alg not allowed" }, { jwt.verify(tok, V.secret) })
      assert.are.same({ nil, "alg not allowed" }, { jwt.verify(tok, V.secret, { algs = { "HS256", "none" } }) })
    end
  end)

  it("rejects HS256 signed with the RSA public key as the HMAC secret", function()
    local pem = crypto.key(V.rsa_public)                 -- the verifier's RSA public key
    -- the attacker knows the public key and uses its bytes as an HMAC secret
    local input = b64u('{"alg":"HS256","typ":"JWT"}') .. "." .. b64u('{"sub":"admin"}')
    local forged = input .. "." .. b64u(crypto.hmac("sha256", app.json.encode(V.rsa_public), input))
    assert.are.same({ nil, "alg not allowed" }, { jwt.verify(forged, V.rsa_public) })
    assert.are.same({ nil, "alg not allowed" }, { jwt.verify(forged, pem) })
    -- even a verifier that allows both algorithms never uses an RSA key as an HMAC secret
    assert.are.same({ nil, "no matching key" }, { jwt.verify(forged, pem, { algs = { "HS256", "RS256" } }) })
  end)

  it("checks expiry and not-before with the leeway", function()
    local now = os.time()
    local exp = jwt.sign({ exp = now - 10 }, V.secret)
    assert.is_table(jwt.verify(exp, V.secret), "10 s past exp is within the 30 s leeway")
    assert.are.same({ nil, "expired" }, { jwt.verify(exp, V.secret, { leeway = 0 }) })
    assert.are.same({ nil, "expired" }, { jwt.verify(jwt.sign({ exp = now - 31 }, V.secret), V.secret) })
    assert.are.same({ nil, "not yet valid" }, { jwt.verify(jwt.sign({ nbf = now + 60 }, V.secret), V.secret) })
    assert.is_table(jwt.verify(jwt.sign({ nbf = now + 20 }, V.secret), V.secret))
    assert.are.same({ nil, "not yet valid" }, { jwt.verify(jwt.sign({ iat = now + 600 }, V.secret), V.secret) })
    assert.are.same({ nil, "malformed claims: exp" }, { jwt.verify(jwt.sign({ exp = "tomorrow" }, V.secret), V.secret) })
    assert.are.same({ nil, "missing claim: exp" }, { jwt.verify(jwt.sign({ sub = "x" }, V.secret), V.secret, { require = { "exp" } }) })
  end)

  it("checks audience and issuer", function()
    local tok = jwt.sign({ aud = { "api", "web" }, iss = "https://id.example" }, V.secret)
    assert.is_table(jwt.verify(tok, V.secret, { aud = "web", iss = "https://id.example" }))
    assert.is_table(jwt.verify(tok, V.secret, { aud = { "mobile", "api" } }))
    assert.are.same({ nil, "wrong audience" }, { jwt.verify(tok, V.secret, { aud = "billing" }) })
    assert.are.same({ nil, "wrong issuer" }, { jwt.verify(tok, V.secret, { iss = "https://evil.example" }) })
    assert.are.same({ nil, "wrong audience" }, { jwt.verify(jwt.sign({ sub = "x" }, V.secret), V.secret, { aud = "api" }) })
  end)

  it("rejects tampered, truncated, oversize and malformed tokens", function()
    local tok = jwt.sign({ sub = "user", admin = false }, V.secret)
    local h, _, s = tok:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    local tampered = h .. "." .. b64u('{"sub":"user","admin":true}') .. "." .. s
    assert.are.same({ nil, "bad signature" }, { jwt.verify(tampered, V.secret) })
    assert.are.same({ nil, "bad signature" }, { jwt.verify(h .. "." .. tok:match("%.([^.]+)%.") .. ".", V.secret) })
    assert.are.same({ nil, "bad signature" }, { jwt.verify(tok, "another-secret-of-thirty-two-bytes!!") })
    local big = jwt.sign({ pad = string.rep("x", 9000) }, V.secret)
    assert.are.same({ nil, "token too large" }, { jwt.verify(big, V.secret) })
    assert.is_table(jwt.verify(big, V.secret, { max_size = 20000 }))
    for _, bad in ipairs({ "", "abc", "a.b", "a.b.c.d", h .. ".!!!." .. s, "e30.e30.", b64u("[1]") .. ".e30.", b64u("not json") .. ".e30.AA" }) do
      assert.are.same({ nil, "malformed token" }, { jwt.verify(bad, V.secret) }, bad)
    end
    -- correctly signed, but the payload is a JSON array, not a claims object
    local input = b64u('{"alg":"HS256"}') .. "." .. b64u("[1,2]")
    local signed = input .. "." .. b64u(crypto.hmac("sha256", V.secret, input))
    assert.are.same({ nil, "malformed token" }, { jwt.verify(signed, V.secret) })
    assert.are.same({ nil, "malformed token" }, { jwt.verify(nil, V.secret) })
    assert.are.same({ nil, "unsupported header: crit" }, { jwt.verify(forge('{"alg":"HS256","crit":["exp"]}', {}, s), V.secret) })
  end)

  it("picks the key by kid from a JWK set and refuses an algorithm not allowed", function()
    local set = { keys = { V.rsa_public, V.ec_public, V.ed_public } }
    local tok = jwt.sign({ sub = "k" }, V.ec_private)                  -- kid ec1 from the JWK
    assert.are.equal("ec1", jwt.decode_unverified(tok).kid)
    assert.are.equal("k", assert(jwt.verify(tok, set)).sub)
    local other = jwt.sign({ sub = "k" }, V.ec_private, { kid = "nope" })
    assert.are.same({ nil, "no matching key" }, { jwt.verify(other, set) })
    assert.are.same({ nil, "alg not allowed" }, { jwt.verify(tok, set, { algs = { "RS256" } }) })
    assert.has_error(function() jwt.sign({}, V.rsa_public) end, "app.jwt.sign: cannot sign RS256 with a public key")
    assert.has_error(function() jwt.sign({}, "short") end, "app.jwt.sign: HS256: HMAC secret shorter than the hash (RFC 7518 section 3.2)")
  end)

  it("re-checks a verified token's claims every time (the verified-token cache)", function()
    local tok = jwt.sign({ sub = "c", aud = "api", exp = os.time() + 100 }, V.secret)
    assert.is_table(jwt.verify(tok, V.secret, { aud = "api" }))
    assert.are.same({ nil, "wrong audience" }, { jwt.verify(tok, V.secret, { aud = "web" }) })
    assert.are.same({ nil, "expired" }, { jwt.verify(tok, V.secret, { now = os.time() + 200 }) })
    assert.are.same({ nil, "alg not allowed" }, { jwt.verify(tok, V.secret, { algs = { "HS512" } }) })
    assert.is_table(jwt.verify(tok, V.secret))
  end)

  it("seals options with app.jwt.options, and still expires a remembered token", function()
    local raw = { aud = "api", leeway = 0 }
    local o = jwt.options(raw)
    raw.aud = "web"                                   -- the sealed copy does not follow
    assert.has_error(function() o.aud = "web" end, "app.jwt.options: read-only (make another with app.jwt.options)")
    local tok = jwt.sign({ sub = "s", aud = "api", exp = os.time() + 1 }, V.secret)
    assert.are.equal("s", assert(jwt.verify(tok, V.secret, o)).sub)
    assert.are.equal("s", assert(jwt.verify(tok, V.secret, o)).sub, "remembered, inside its window")
    assert.are.same({ nil, "wrong audience" }, { jwt.verify(tok, V.secret, jwt.options({ aud = "web" })) })
    local t0 = os.time()
    while os.time() <= t0 + 1 do app.sleep(0.1) end   -- past exp (real seconds: the token's clock)
    assert.are.same({ nil, "expired" }, { jwt.verify(tok, V.secret, o) })
  end)

  it("protects a route with a bearer token", function()
    local tok = post("/token", { sub = "ann" }):json().token
    local res = request("GET", "/me", { headers = { authorization = "Bearer " .. tok } })
    assert.are.equal(200, res.status, res.body)
    assert.are.same({ sub = "ann" }, res:json())
    assert.are.same({ error = "bearer token required" }, request("GET", "/me"):json())
    local sig = tok:match("[^.]+$")
    local flipped = sig:sub(1, 10) .. (sig:sub(11, 11) == "A" and "B" or "A") .. sig:sub(12)
    res = request("GET", "/me", { headers = { authorization = "Bearer " .. tok:sub(1, -#sig - 1) .. flipped } })
    assert.are.equal(401, res.status)
    assert.are.same({ error = "bad signature" }, res:json())
    local expired = post("/token", { sub = "ann", ttl = -100 }):json().token
    assert.are.same({ error = "expired" }, request("GET", "/me", { headers = { authorization = "Bearer " .. expired } }):json())
    H.still_works()
  end)

  it("verifies the request's bearer token with verify_bearer", function()
    local tok = post("/token", { sub = "bo" }):json().token
    local function me(h) return request("GET", "/me-bearer", { headers = h }) end
    assert.are.same({ sub = "bo" }, me({ authorization = "Bearer " .. tok }):json())
    assert.are.same({ sub = "bo" }, me({ authorization = "bearer  " .. tok .. " " }):json(), "scheme in any case, spaces")
    assert.are.same({ error = "no bearer token" }, me({}):json())
    assert.are.same({ error = "no bearer token" }, me({ authorization = "Basic Ym86eA==" }):json())
    assert.are.same({ error = "malformed token" }, me({ authorization = "Bearer " .. tok .. "!" }):json())
    -- a cached header value still gets its claims checked
    local hv = "Bearer " .. jwt.sign({ sub = "x", aud = "api", exp = os.time() + 100 }, V.secret)
    local req = { headers = { authorization = hv } }
    assert.is_table(jwt.verify_bearer(req, V.secret, { aud = "api" }))
    assert.are.same({ nil, "expired" }, { jwt.verify_bearer(req, V.secret, { aud = "api", now = os.time() + 200 }) })
    assert.are.same({ nil, "wrong audience" }, { jwt.verify_bearer(req, V.secret, { aud = "web" }) })
    assert.are.same({ nil, "bad signature" }, { jwt.verify_bearer(req, "another-secret-of-thirty-two-bytes!!") })
  end)

  -- the verified-token cache of options objects (core/lua_jwt.c)
  local function sealed_me(tok)
    return request("GET", "/me-sealed", { headers = { authorization = "Bearer " .. tok } })
  end

  it("answers a token seen before from the options object's cache", function()
    local tok = post("/token", { sub = "cat", ttl = 100 }):json().token
    local r1 = sealed_me(tok)
    assert.are.equal(200, r1.status, r1.body)
    assert.are.equal("cat", r1:json().sub)
    local r2, r3 = sealed_me(tok):json(), sealed_me(tok):json()
    assert.are.equal("cat", r3.sub)
    assert.is_true(r3.hits > r2.hits and r2.hits >= r1:json().hits + 1, "hits: " .. r1:json().hits .. " " .. r2.hits .. " " .. r3.hits)
    -- the same table every time, and the header with it
    local o = jwt.options({ aud = "api" })
    local t2 = jwt.sign({ sub = "same", aud = "api" }, V.secret, { expires_in = 100 })
    local cl1, h1 = jwt.verify(t2, V.secret, o)
    local cl2, h2 = jwt.verify(t2, V.secret, o)
    assert.are.equal("same", cl1.sub)
    assert.are.equal(cl1, cl2)
    assert.are.equal(h1, h2)
    assert.are.equal("HS256", h2.alg)
    assert.are.equal(1, jwt.cache_stats(o).hits)
    -- the same token under its own name and as an Authorization value are different entries
    local req = { headers = { authorization = t2 } }
    assert.are.same({ nil, "no bearer token" }, { jwt.verify_bearer(req, V.secret, o) })
    H.still_works()
  end)

  it("still expires a cached token, with the leeway, on app.jwt's clock", function()
    local tok = post("/token", { sub = "dog", ttl = 100 }):json().token
    assert.are.equal(200, sealed_me(tok).status)
    local hits = sealed_me(tok):json().hits
    local ok, err = pcall(function()
      jwt._clock_shift(105)                          -- past exp, inside the 10 s leeway
      local r = sealed_me(tok)
      assert.are.equal(200, r.status, r.body)
      assert.is_true(r:json().hits > hits, "answered by the cache")
      jwt._clock_shift(6)                            -- exp + 11 s
      r = sealed_me(tok)
      assert.are.equal(401, r.status)
      assert.are.same({ error = "expired" }, r:json())
      assert.are.same({ error = "expired" }, sealed_me(tok):json(), "and stays so")
      -- the same for a token not yet valid: nbf in the future, then reached
      local nbf = jwt.sign({ sub = "early", aud = "api", nbf = os.time() + 111 + 60 }, V.secret)
      local o = jwt.options({ aud = "api", leeway = 0 })
      assert.are.same({ nil, "not yet valid" }, { jwt.verify(nbf, V.secret, o) })
      jwt._clock_shift(61)
      assert.are.equal("early", assert(jwt.verify(nbf, V.secret, o)).sub)
      assert.are.equal("early", assert(jwt.verify(nbf, V.secret, o)).sub)
      jwt._clock_shift(-61)
      assert.are.same({ nil, "not yet valid" }, { jwt.verify(nbf, V.secret, o) }, "a cached token before its nbf")
    end)
    jwt._clock_shift(-jwt._clock_shift(0))
    assert(ok, err)
    assert.are.equal(200, sealed_me(post("/token", { sub = "dog" }):json().token).status)
  end)

  it("honours the options' own now in the cache", function()
    local tok = jwt.sign({ sub = "n", exp = 1000 }, V.secret)
    local before = jwt.options({ now = 900, leeway = 0 })
    assert.are.equal("n", assert(jwt.verify(tok, V.secret, before)).sub)
    assert.are.equal("n", assert(jwt.verify(tok, V.secret, before)).sub)
    assert.are.equal(1, jwt.cache_stats(before).hits)
    assert.are.same({ nil, "expired" }, { jwt.verify(tok, V.secret, jwt.options({ now = 1001, leeway = 0 })) })
    assert.are.same({ nil, "expired" }, { jwt.verify(tok, V.secret) }, "on the real clock")
  end)

  it("does not reuse a verification for another key or other options", function()
    local tok = post("/token", { sub = "eel", ttl = 100 }):json().token
    assert.are.equal(200, sealed_me(tok).status)
    assert.are.equal(200, sealed_me(tok).status)
    assert.are.equal(204, request("POST", "/rotate-key", { body = "a-rotated-secret-of-thirty-two-bytes!!" }).status)
    local ok, err = pcall(function()
      local r = sealed_me(tok)
      assert.are.equal(401, r.status)
      assert.are.same({ error = "bad signature" }, r:json())
    end)
    assert.are.equal(204, request("POST", "/rotate-key", { body = "" }).status)
    assert(ok, err)
    assert.are.equal(200, sealed_me(tok).status, "the key back")
    -- one options object, two keys, alternating: each keeps its own verifications
    local o = jwt.options({})
    local k1, k2 = crypto.secret(V.secret), crypto.secret("another-secret-of-thirty-two-bytes!!")
    local t1 = jwt.sign({ sub = "one" }, k1)
    for _ = 1, 3 do
      assert.are.equal("one", assert(jwt.verify(t1, k1, o)).sub)
      assert.are.same({ nil, "bad signature" }, { jwt.verify(t1, k2, o) })
    end
    assert.are.equal(2, jwt.cache_stats(o).hits)
    -- and another options object does not see o's verifications
    assert.are.same({ nil, "wrong audience" }, { jwt.verify(t1, k1, jwt.options({ aud = "api" })) })
    H.still_works()
  end)

  it("drops what a JWK set verified when its keys rotate", function()
    if not pcall(require, "sluice.http") then
      print("NOTE: JWKS rotation not tested: this build has no sluice.http (the outbound HTTP client)")
      return
    end
    local ka, kb = "key-a-of-at-least-thirty-two-bytes!!", "key-b-of-at-least-thirty-two-bytes!!"
    local function jwk(kid, secret) return { kty = "oct", kid = kid, alg = "HS256", k = b64u(secret) } end
    assert.are.equal(204, post("/jwks-rotating.json", { keys = { jwk("a", ka) } }).status)
    local set = jwt.jwks("http://127.0.0.1:" .. require("sluice.testing").port() .. "/jwks-rotating.json", { ttl = 60, min_refresh = 0 })
    local o = jwt.options({})
    local ta = jwt.sign({ sub = "a" }, ka, { kid = "a" })
    assert.are.equal("a", assert(jwt.verify(ta, set, o)).sub)
    assert.are.equal("a", assert(jwt.verify(ta, set, o)).sub)
    assert.are.equal(1, jwt.cache_stats(o).hits)
    -- the provider rotates: key a is gone, b is in; a token with kid b makes the set refetch
    assert.are.equal(204, post("/jwks-rotating.json", { keys = { jwk("b", kb) } }).status)
    assert.are.equal("b", assert(jwt.verify(jwt.sign({ sub = "b" }, kb, { kid = "b" }), set, o)).sub)
    assert.are.same({ nil, "no matching key" }, { jwt.verify(ta, set, o) })
    assert.are.equal(1, jwt.cache_stats(o).hits)
  end)

  it("never answers a tampered token from the cache", function()
    local tok = post("/token", { sub = "fox", ttl = 100 }):json().token
    assert.are.equal(200, sealed_me(tok).status)
    assert.are.equal(200, sealed_me(tok).status)
    local h, p, s = tok:match("^([^.]+)%.([^.]+)%.([^.]+)$")
    -- the same length and the same signature (so the same hash in the cache): another payload
    local flip = function(str, i) local ch = str:sub(i, i); return str:sub(1, i - 1) .. (ch == "A" and "B" or "A") .. str:sub(i + 1) end
    for _, bad in ipairs({ h .. "." .. flip(p, 5) .. "." .. s, flip(h, 1) .. "." .. p .. "." .. s, h .. "." .. p .. "." .. flip(s, 1) }) do
      assert.are.equal(#tok, #bad)
      local r = sealed_me(bad)
      assert.are.equal(401, r.status, bad)
      assert.is_truthy(({ ["bad signature"] = true, ["malformed token"] = true })[r:json().error], r.body)
      assert.is_nil((jwt.verify(bad, V.secret, jwt.options({ aud = "api" }))))
    end
    assert.are.equal("fox", sealed_me(tok):json().sub)
    -- two Authorization headers (the same cached token twice): not one the cache answers
    local r = request("GET", "/me-sealed", { headers = { authorization = "Bearer " .. tok .. "\r\nAuthorization: Bearer " .. tok } })
    assert.are.equal(401, r.status)
    assert.are.same({ error = "malformed token" }, r:json())
    assert.are.equal("fox", sealed_me(tok):json().sub)
    H.still_works()
  end)

  it("keeps the cache bounded, however many tokens it sees", function()
    local o = jwt.options({})
    local key = crypto.secret(V.secret)
    local function registry_size()
      local n = 0
      for _ in pairs(debug.getregistry()) do n = n + 1 end
      return n
    end
    local function run(from, to)
      for i = from, to do assert(jwt.verify(jwt.sign({ n = i }, key), key, o)) end
      collectgarbage()
      return jwt.cache_stats(o), registry_size()
    end
    local r0 = registry_size()
    local s1, r1 = run(1, 2500)
    local s2, r2 = run(2501, 5000)
    assert.are.equal(1024, s1.capacity)
    assert.is_true(s1.entries <= s1.capacity and s2.entries <= s2.capacity, s1.entries .. " " .. s2.entries)
    assert.is_true(s2.entries >= 512, "most of the cache in use: " .. s2.entries)
    assert.is_true(s2.bytes <= s2.capacity * 200, "bytes " .. s2.bytes)
    -- two references per entry (claims, header), two per key set: released when replaced
    assert.is_true(r1 <= r0 + 2 * s1.capacity + 8 and r2 <= r0 + 2 * s2.capacity + 8, "registry entries " .. r0 .. " -> " .. r1 .. " -> " .. r2)
    -- an entry for each of the last tokens is still found
    local last = jwt.sign({ n = 5000 }, key)
    local hits = s2.hits
    assert(jwt.verify(last, key, o))
    assert.are.equal(hits + 1, jwt.cache_stats(o).hits)
  end)

  it("reads one header with req:header", function()
    local j = request("GET", "/header", { headers = { ["x-thing"] = "yes" } }):json()
    assert.are.same({ thing = "yes", missing = app.null }, j)
  end)

  it("fetches a JWK set over HTTP with app.jwt.jwks", function()
    if not pcall(require, "sluice.http") then
      print("NOTE: app.jwt.jwks over HTTP not tested: this build has no sluice.http (the outbound HTTP client)")
      return
    end
    local port = require("sluice.testing").port()
    local set = jwt.jwks("http://127.0.0.1:" .. port .. "/jwks.json", { ttl = 60 })
    local tok = jwt.sign({ sub = "remote" }, V.rsa_private)
    assert.are.equal("remote", assert(jwt.verify(tok, set)).sub)
    assert.are.same({ nil, "no matching key" }, { jwt.verify(jwt.sign({}, V.rsa_private, { kid = "gone" }), set) })
    -- a set that cannot be fetched, or is not a JWK set: the reason, never an error
    local dead = jwt.jwks("http://127.0.0.1:1/jwks.json", { timeout = 2 })
    local cl, why = jwt.verify(tok, dead)
    assert.is_nil(cl)
    assert.matches("^JWKS http://127%.0%.0%.1:1/jwks%.json: ", why)
    local notset = jwt.jwks("http://127.0.0.1:" .. port .. "/ok")
    assert.are.same({ nil, "JWKS http://127.0.0.1:" .. port .. "/ok: not a JWK set" }, { jwt.verify(tok, notset) })
    H.still_works()
  end)
end)

describe("SSE authorized by a JWT, Mercure-style", function()
  local function token(topics, aud)
    return jwt.sign({ sub = "sub1", aud = aud or "hub", mercure = { subscribe = topics } }, V.secret, { expires_in = 60 })
  end

  it("accepts a bearer token or the mercureAuthorization cookie for its topics", function()
    local s = subscribe("/hub/news", { headers = { authorization = "Bearer " .. token({ "news" }) } })
    post("/hub/news", { text = "hi" })
    assert.are.equal("update", s:next_event(1).event)
    s:close()
    local c = subscribe("/hub/sport", { headers = { cookie = "mercureAuthorization=" .. token({ "*" }) } })
    post("/hub/sport", { text = "goal" })
    assert.are.equal('{"text":"goal"}', c:next_event(1).data)
    c:close()
  end)

  it("refuses a missing, wrong-audience or wrong-topic token", function()
    local function refused(headers)
      local ok, err = pcall(subscribe, "/hub/news", { headers = headers })
      assert.is_false(ok)
      return err.status, err.body
    end
    assert.are.equal(401, (refused({})))
    assert.are.equal(401, (refused({ authorization = "Bearer " .. token({ "news" }, "api") })))
    local st, body = refused({ authorization = "Bearer " .. token({ "weather" }) })
    assert.are.equal(403, st)
    assert.matches("mercure.subscribe", body)
    H.still_works()
  end)
end)

describe("app.password", function()
  it("hashes Argon2id with config.lua's parameters and verifies", function()
    local h = post("/hash", { pw = "correct horse" }):json().hash
    assert.matches("^%$argon2id%$v=19%$m=8192,t=1,p=1%$", h)
    assert.are.same({ ok = true, rehash = false }, post("/verify", { pw = "correct horse", hash = h }):json())
    assert.are.same({ ok = false, rehash = false }, post("/verify", { pw = "correct horsE", hash = h }):json())
    assert.are_not.equal(h, post("/hash", { pw = "correct horse" }):json().hash, "a new salt each time")
  end)

  it("verifies hashes made by the argon2 command-line tool", function()
    local f = io.popen("printf %s 'tr0ub4dor' | argon2 'salt-from-spec' -id -t 2 -m 12 -p 2 -e 2>/dev/null")
    local cli = f:read("*l")
    f:close()
    if not cli then
      print("NOTE: argon2 CLI not installed; checking a hash it made earlier")
      cli = "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0$5YHT8ZDhBeqdbLaIKKPWaHOVfqCkLDnJo/WC5yMJsmg"
      assert.is_true(post("/verify", { pw = "correct horse", hash = cli }):json().ok)
      return
    end
    assert.matches("^%$argon2id%$v=19%$m=4096,t=2,p=2%$", cli)
    assert.are.same({ ok = true, rehash = true }, post("/verify", { pw = "tr0ub4dor", hash = cli }):json())
    assert.is_false(post("/verify", { pw = "tr0ub4dor!", hash = cli }):json().ok)
  end)

  it("answers false, never an error, for hashes that are not hashes", function()
    for _, bad in ipairs({ "", "plain", "$argon2id$v=19$m=8192,t=1,p=1$bad", string.rep("$argon2id", 50) }) do
      assert.are.same({ ok = false, rehash = true }, post("/verify", { pw = "x", hash = bad }):json())
    end
    H.still_works()
  end)

  it("hashes at load time (inline) and several times in one handler", function()
    assert.is_true(request("GET", "/load-hash"):json().ok)
    local hs = post("/hash-many", { n = 4 }):json().hashes
    assert.are.equal(4, #hs)
    for i = 2, 4 do assert.are_not.equal(hs[1], hs[i]) end
  end)

  it("refuses to run from a coroutine the handler made", function()
    local r = request("GET", "/hash-in-coroutine"):json()
    assert.is_false(r.ok)
    assert.matches("call it from the handler itself", r.err)
  end)

  it("rejects what cannot be a password with a clear error", function()
    assert.has_error(function() app.password.hash(nil) end, "app.password.hash: password must be a string")
    local res = post("/hash", { pw = string.rep("p", 5000) })
    assert.are.equal(500, res.status)
    assert.matches("longer than 4096 bytes", res:json().error)
    H.still_works()
  end)
end)

describe("app.validate", function()
  local S = {
    fields = {
      user = { type = "object", required = true, fields = {
        name = { type = "string", required = true, min_length = 2, max_length = 5 },
        emails = { type = "array", items = { type = "string", format = "email" } },
      } },
      items = { type = "array", min_items = 1, items = { fields = {
        sku = { type = "string", pattern = "^%u%u%-%d+$", required = true },
        qty = { type = "integer", min = 1, max = 99 },
      } } },
      color = { enum = { "red", "green" } },
      note = { type = "string", nullable = true, single_line = true },
    },
  }

  it("lists every failing field with its path", function()
    local v, errs = app.validate(S, {
      user = { name = "x", emails = { "a@b.co", "nope" }, extra = 1 },
      items = { { sku = "AB-1", qty = 0 }, { qty = 1.5 } },
      color = "blue",
      note = "two\nlines",
    })
    assert.is_nil(v)
    assert.are.same({
      ["user.name"] = "must be 2..5 characters",
      ["user.emails[2]"] = "must be a valid email",
      ["user.extra"] = "unknown field",
      ["items[1].qty"] = "must be at least 1",
      ["items[2].sku"] = "is required",
      ["items[2].qty"] = "must be an integer",
      color = 'must be one of "red", "green"',
      note = "must not contain control characters",
    }, errs)
  end)

  it("returns the clean value: trimmed, defaulted, unknown fields stripped when asked", function()
    local s = { fields = { name = { type = "string", trim = true, max_length = 3 }, role = { default = "member" },
                           n = { type = "number" } }, unknown = "strip" }
    assert.are.same({ name = "ann", role = "member", n = 2.5 }, app.validate(s, { name = "  ann ", n = 2.5, junk = true }))
    assert.are.same({ nil, { ["$"] = "must be an object" } }, { app.validate(s, "text") })
    assert.are.same({ nil, { ["$"] = "must be an object" } }, { app.validate(s, { 1, 2 }) })
    assert.are.same({ nil, { name = "must be at most 3 characters" } }, { app.validate(s, { name = "ñañaña" }) })
    assert.are.same({ nil, { name = "must be UTF-8 text" } }, { app.validate(s, { name = "\255" }) })
  end)

  it("runs custom checks, with a sub-path table or a message", function()
    local s = { fields = { pw = { type = "string" }, pw2 = { type = "string" } },
                check = function(v) if v.pw ~= v.pw2 then return { pw2 = "does not match pw" } end end }
    assert.are.same({ nil, { pw2 = "does not match pw" } }, { app.validate(s, { pw = "a", pw2 = "b" }) })
    assert.is_table(app.validate(s, { pw = "a", pw2 = "a" }))
    local even = { type = "integer", check = function(v) return v % 2 == 0 or "must be even" end }
    assert.are.same({ nil, { ["$"] = "must be even" } }, { app.validate(even, 3) })
    assert.are.equal(4, app.validate(even, 4))
    assert.are.same({ nil, { ["[2]"] = "duplicate of item [1]" } }, { app.validate({ type = "array", unique = true }, { "a", "a" }) })
  end)

  it("raises on a schema mistake, naming the rule", function()
    assert.has_error(function() app.validate({ fields = { a = { tpye = "string" } } }, {}) end, "app.validate: schema a: unknown rule tpye")
    assert.has_error(function() app.validate({ type = "text" }, "x") end, "app.validate: schema unknown type text")
  end)

  it("answers 422 with the fields through app.error", function()
    local res = post("/items", { name = "", age = -1, tags = { "toolong", "a", "a" }, address = { zip = "12" }, password = "short" })
    assert.are.equal(422, res.status)
    assert.matches("^application/json", res.headers["content-type"])
    assert.are.same({
      error = "validation failed", status = 422,
      fields = {
        name = "must be 1..20 characters",
        age = "must be at least 0",
        ["tags[1]"] = "must be at most 5 characters",
        ["tags[3]"] = "duplicate of item [2]",
        ["address.city"] = "is required",
        ["address.zip"] = "has an invalid format",
        password = "must be at least 8 characters",
      },
    }, res:json())
    res = post("/items", { name = " ok ", tags = { "a" } })
    assert.are.equal(201, res.status, res.body)
    assert.are.same({ name = "ok", role = "member", tags = { "a" } }, res:json())
    res = request("POST", "/items", { body = "{bad json", headers = { ["content-type"] = "application/json" } })
    assert.are.equal(400, res.status)
    H.still_works()
  end)
end)

describe("app.session", function()
  local function cookie_of(res) return (res.headers["set-cookie"] or ""):match("^sluice_sid=([^;]*)") end

  it("signs the session id in the cookie and loads the session back", function()
    local res = post("/login", { user = "ann" })
    local v = cookie_of(res)
    local sid = res:json().sid
    assert.are.equal(sid .. ".", v:sub(1, #sid + 1), "the cookie is id.signature")
    assert.matches("HttpOnly", res.headers["set-cookie"], 1, true)
    assert.matches("SameSite=Lax", res.headers["set-cookie"], 1, true)
    assert.are.same({ user = "ann", sid = sid }, request("GET", "/session", { headers = { cookie = "sluice_sid=" .. v } }):json())
  end)

  it("ignores an unsigned, forged or moved id", function()
    local res = post("/login", { user = "bob" })
    local v, sid = cookie_of(res), res:json().sid
    local function who(c) return request("GET", "/session", { headers = { cookie = "sluice_sid=" .. c } }):json().user end
    assert.is_nil(who(sid), "a bare id is not enough once keys are set")
    assert.is_nil(who(sid .. "." .. string.rep("A", 43)))
    assert.is_nil(who(v:sub(1, -2) .. (v:sub(-1) == "A" and "B" or "A")))
    -- the same value signed for another cookie name does not count here
    assert.is_nil(who(app.session.sign(sid, "other_cookie")))
  end)

  it("accepts a cookie signed with the previous key (rotation)", function()
    local res = post("/login", { user = "cat" })
    local sid = res:json().sid
    local old = require("sluice_session").new({ config = { session = { keys = { app.config.session.keys[2] } } },
                                                cache = app.cache, json = app.json, before = app.before })
    local signed_old = old.sign(sid, "sluice_sid")
    assert.are_not.equal(cookie_of(res), signed_old)
    assert.are.equal("cat", request("GET", "/session", { headers = { cookie = "sluice_sid=" .. signed_old } }):json().user)
    -- a key that was never configured does not
    local stranger = require("sluice_session").new({ config = { session = { keys = { string.rep("z", 32) } } } })
    assert.is_nil(request("GET", "/session", { headers = { cookie = "sluice_sid=" .. stranger.sign(sid, "sluice_sid") } }):json().user)
  end)

  it("destroys the session on logout", function()
    local v = cookie_of(post("/login", { user = "dan" }))
    local res = request("POST", "/logout", { headers = { cookie = "sluice_sid=" .. v } })
    assert.are.equal(204, res.status)
    assert.matches("^sluice_sid=;.*Max%-Age=0", res.headers["set-cookie"])
    assert.is_nil(request("GET", "/session", { headers = { cookie = "sluice_sid=" .. v } }):json().user)
  end)

  it("keeps the data in a signed cookie with store = cookie", function()
    local s = require("sluice_session").new({ config = { session = { keys = app.config.session.keys, store = "cookie", ttl = 60 } },
                                              json = app.json })
    local value, cookie = s.save(nil, { user = "eve", roles = { "a" } })
    assert.are.equal(value, cookie.value)
    assert.are.equal(60, cookie.max_age)
    local data = s.load({ cookies = { sluice_sid = value } })
    assert.are.same({ user = "eve", roles = { "a" } }, data)
    local body = value:match("^([^.]+)")
    local evil = crypto.base64url_encode('{"user":"admin"}') .. value:sub(#body + 1)
    assert.are.same({}, s.load({ cookies = { sluice_sid = evil } }), "changed data breaks the signature")
    local clock = s._clock
    s._clock = function() return clock() + 61 end
    assert.are.same({}, s.load({ cookies = { sluice_sid = value } }), "expired")
    s._clock = clock
    assert.are.same({ nil, "app.session: data too large for a cookie (4 KB)" }, { s.save(nil, { blob = string.rep("x", 4000) }) })
  end)
end)

describe("app.csrf", function()
  local function token_and_cookie()
    local res = request("GET", "/form")
    local c = (res.headers["set-cookie"] or ""):match("^(sluice_csrf=[^;]*)")
    return res:json().token, c
  end

  it("lets an unsafe request through only with the token of its cookie", function()
    local token, cookie = token_and_cookie()
    assert.is_string(cookie)
    local ok = request("POST", "/forms/submit", { headers = { cookie = cookie, ["x-csrf-token"] = token } })
    assert.are.equal(200, ok.status, ok.body)
    local form = request("POST", "/forms/submit", { form = { _csrf = token }, headers = { cookie = cookie } })
    assert.are.equal(200, form.status, form.body)
    local function refused(headers, form_body)
      local res = request("POST", "/forms/submit", { headers = headers, form = form_body })
      assert.are.equal(403, res.status)
      return res:json().error
    end
    assert.are.equal("csrf: csrf cookie missing or invalid", refused({ ["x-csrf-token"] = token }))
    assert.are.equal("csrf: csrf token missing", refused({ cookie = cookie }))
    assert.are.equal("csrf: csrf token invalid", refused({ cookie = cookie, ["x-csrf-token"] = token:sub(2) .. "A" }))
    local other_token = token_and_cookie()
    assert.are.equal("csrf: csrf token invalid", refused({ cookie = cookie, ["x-csrf-token"] = other_token }))
    assert.are.equal(200, request("GET", "/forms/view").status, "safe methods pass")
    H.still_works()
  end)

  it("binds the token to the session cookie", function()
    local res = request("GET", "/form", { headers = { cookie = "sluice_sid=session-one" } })
    local token = res:json().token
    local cookie = res.headers["set-cookie"]:match("^(sluice_csrf=[^;]*)")
    local function submit(sid)
      return request("POST", "/forms/submit", { headers = { cookie = cookie .. "; sluice_sid=" .. sid, ["x-csrf-token"] = token } }).status
    end
    assert.are.equal(200, submit("session-one"))
    assert.are.equal(403, submit("session-two"), "a token planted from another session does not validate")
  end)
end)

describe("app.log", function()
  it("takes a fields table and exposes the trace context", function()
    local res = request("GET", "/log", { headers = { traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } })
    assert.are.equal(200, res.status)
    local j = res:json()
    assert.are.equal("0af7651916cd43dd8448eb211c80319c", j.trace_id)
    assert.matches("^00%-0af7651916cd43dd8448eb211c80319c%-%x+%-01$", j.traceparent)
    assert.are_not.equal("b7ad6b7169203331", j.traceparent:sub(37, 52), "the outbound parent is this request's span")
    assert.are.equal("/log", j.route)
    local t = request("GET", "/items/7/trace"):json()
    assert.matches("^%x+$", t.trace_id)
    assert.are.equal(32, #t.trace_id)
    assert.are.equal("/items/:id/trace", t.route)
  end)

  it("passes the trace on to outbound app.http calls", function()
    local port = require("sluice.testing").port()
    local res = request("GET", "/outbound", { query = { port = port },
                                               headers = { traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } })
    assert.are.equal(200, res.status, res.body)
    local j = res:json()
    assert.are.equal("0af7651916cd43dd8448eb211c80319c", j.trace_id)
    assert.are.equal("00-0af7651916cd43dd8448eb211c80319c-" .. j.span_id .. "-01", j.sent, "the request's span is the callee's parent")
    assert.are.equal("00-11111111111111111111111111111111-2222222222222222-01", j.own, "a call's own traceparent wins")
  end)

  it("raises on fields it cannot encode", function()
    local res = request("GET", "/badlog")
    assert.are.equal(500, res.status)
    assert.matches("app.log: fields: cannot encode a function", res:json().error)
    H.still_works()
  end)
end)
