-- ratelimit_spec: the policies in config.lua as a client sees them (the limiter starts empty
-- for every test and runs on the virtual clock).
local B = require("tests.spec.board_helper").with(request)

describe("rate limits", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  it("puts the API under the spec's policy: 1,000 requests per 15 minutes per IP", function()
    local res = request("GET", "/api/rooms")
    assert.are.equal(200, res.status)
    assert.are.equal('"api";q=1000;w=900', res.headers["ratelimit-policy"])
    assert.matches('^"api";r=999;', res.headers["ratelimit"])
  end)

  it("answers 429 with Retry-After after 1,000 requests, and admits again after one interval", function()
    -- The test clock follows real time (plus clock.advance), so a slow run earns one more
    -- request per 0.9 s it takes: count what is admitted until the first 429.
    local t0, admitted, res = clock.now(), 0, nil
    repeat
      res = request("GET", "/api/no-such-route")              -- cheap: no database
      if res.status == 404 then admitted = admitted + 1 end
    until res.status ~= 404 or admitted > 1100
    local elapsed = clock.now() - t0
    assert.are.equal(429, res.status)
    assert.is_true(admitted >= 1000, "admitted only " .. admitted)
    assert.is_true(admitted <= 1000 + math.floor(elapsed / 0.9) + 1, "admitted " .. admitted .. " in " .. elapsed .. " s")
    assert.matches("^%d+$", res.headers["retry-after"])
    assert.matches('^"api";r=0;', res.headers["ratelimit"])
    local body = res:json()
    assert.are.equal("api", body.policy)
    assert.are.equal(1000, body.limit)
    clock.advance(0.9)                                         -- T = 900 s / 1000
    assert.are.equal(200, request("GET", "/api/rooms").status)
    assert.are.equal(429, request("GET", "/api/rooms").status)
  end)

  it("does not count event streams", function()
    local room = B.room("alice", "Streams")
    local before = request("GET", "/api/me", { headers = B.as("alice") }).headers["ratelimit"]
    for _ = 1, 5 do subscribe("/api/rooms/" .. room.id .. "/events", { headers = B.as("alice") }) end
    local after = request("GET", "/api/me", { headers = B.as("alice") }).headers["ratelimit"]
    local r1, r2 = tonumber(before:match("r=(%d+)")), tonumber(after:match("r=(%d+)"))
    assert.are.equal(r1 - 1, r2)
  end)

  it("allows 10 logins a minute per IP, right or wrong", function()
    B.account("u1", "password one")
    -- a token every 6 s on a clock that follows real time: a machine slow enough to spend 6 s on
    -- the Argon2id verifies earns one more login per 6 s, so count what is admitted until the 429
    local t0, admitted, res = clock.now(), 0, nil
    repeat
      local right = admitted % 2 == 1                         -- wrong, right, wrong, ...
      res = request("POST", "/api/login", { json = { name = "u1", password = right and "password one" or "wrong guess" } })
      if res.status ~= 429 then
        assert.are.equal(right and 200 or 401, res.status)
        admitted = admitted + 1
      end
    until res.status == 429 or admitted > 40
    local elapsed = clock.now() - t0
    assert.are.equal(429, res.status)
    assert.is_true(admitted >= 10 and admitted <= 10 + math.floor(elapsed / 6) + 1,
      "admitted " .. admitted .. " logins in " .. elapsed .. " s")
    assert.are.equal('"login";q=10;w=60', res.headers["ratelimit-policy"])
    -- a token every 6 s; the ten Argon2id verifies took part of the first interval already
    local wait = tonumber(res.headers["retry-after"])
    assert.is_true(wait >= 1 and wait <= 6, "retry-after " .. tostring(wait))
    clock.advance(wait)
    assert.are.equal(200, request("POST", "/api/login", { json = { name = "u1", password = "password one" } }).status)
  end)

  it("keeps other requests on the API policy while logins are limited", function()
    for i = 1, 11 do request("POST", "/api/login", { json = { name = "v" .. i, password = "x" } }) end
    assert.are.equal(200, request("GET", "/api/rooms").status)
  end)

  it("allows 20 signups an hour per IP", function()
    for i = 1, 20 do request("POST", "/api/signup", { json = { name = "s" .. i, password = "short" } }) end
    local res = request("POST", "/api/signup", { json = { name = "s21", password = "long enough" } })
    assert.are.equal(429, res.status)
    assert.are.equal('"signup";q=20;w=3600', res.headers["ratelimit-policy"])
  end)

  it("puts monitoring endpoints under their own policy: 300 a minute", function()
    -- the test clock runs at real speed (docs/testing.md): a token refills every 60/300 = 0.2 s,
    -- so a slow machine earns one extra request per 200 ms the loop takes
    local t0, admitted, res = clock.now(), 0, nil
    repeat
      res = request("GET", "/health")
      if res.status == 200 then admitted = admitted + 1 end
    until res.status ~= 200 or admitted > 400
    local refilled = math.floor((clock.now() - t0) / 0.2)
    assert.are.equal(429, res.status)
    assert.is_true(admitted >= 300 and admitted <= 300 + refilled,
      "admitted " .. admitted .. " with " .. refilled .. " refilled")
    assert.are.equal('"monitoring";q=300;w=60', res.headers["ratelimit-policy"])
    local api = request("GET", "/api/rooms")                     -- the API budget is separate
    assert.are.equal(200, api.status, api.body)
  end)
end)
