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
    -- one interval later one more is admitted, not a fresh budget: the 429 left a fraction of a
    -- token, and real time keeps adding (one per 0.9 s), so count until the next 429
    local t1, again = clock.now(), 0
    clock.advance(0.9)                                         -- T = 900 s / 1000
    repeat
      res = request("GET", "/api/no-such-route")
      if res.status == 404 then again = again + 1 end
    until res.status ~= 404 or again > 100
    assert.are.equal(429, res.status)
    local took = clock.now() - t1 - 0.9
    assert.is_true(again >= 1 and again <= 2 + math.floor(took / 0.9), "admitted " .. again .. " after one interval")
  end)

  it("does not count event streams", function()
    local room = B.room("alice", "Streams")
    local before = request("GET", "/api/me", { headers = B.as("alice") }).headers["ratelimit"]
    for _ = 1, 5 do subscribe("/api/rooms/" .. room.id .. "/events", { headers = B.as("alice") }) end
    local after = request("GET", "/api/me", { headers = B.as("alice") }).headers["ratelimit"]
    local r1, r2 = tonumber(before:match("r=(%d+)")), tonumber(after:match("r=(%d+)"))
    assert.are.equal(r1 - 1, r2)
  end)

  -- Logins: a token every 6 s on a clock that follows real time, and an Argon2id verify can take
  -- seconds on a loaded machine. So two real logins, then requests the handler refuses before
  -- hashing (422: no password) until the first 429: what counts is every POST to /api/login,
  -- whatever its answer, and a slow run earns one more per 6 s it takes.
  local function exhaust_logins(name)
    local t0, admitted, res = clock.now(), 0, nil
    repeat
      res = request("POST", "/api/login", { json = { name = name } })
      if res.status ~= 429 then
        assert.are.equal(422, res.status, res.body)
        admitted = admitted + 1
      end
    until res.status == 429 or admitted > 40
    return res, admitted, clock.now() - t0
  end

  it("allows 10 logins a minute per IP, right or wrong", function()
    B.account("u1", "password one")
    local t0 = clock.now()
    assert.are.equal(401, request("POST", "/api/login", { json = { name = "u1", password = "wrong guess" } }).status)
    assert.are.equal(200, request("POST", "/api/login", { json = { name = "u1", password = "password one" } }).status)
    local res, admitted, _ = exhaust_logins("u1")
    local elapsed = clock.now() - t0
    admitted = admitted + 2
    assert.are.equal(429, res.status)
    assert.is_true(admitted >= 10 and admitted <= 10 + math.floor(elapsed / 6) + 1,
      "admitted " .. admitted .. " logins in " .. elapsed .. " s")
    assert.are.equal('"login";q=10;w=60', res.headers["ratelimit-policy"])
    -- the next token is at most 6 s away
    local wait = tonumber(res.headers["retry-after"])
    assert.is_true(wait >= 1 and wait <= 6, "retry-after " .. tostring(wait))
    clock.advance(wait)
    assert.are.equal(200, request("POST", "/api/login", { json = { name = "u1", password = "password one" } }).status)
  end)

  it("keeps other requests on the API policy while logins are limited", function()
    local res = exhaust_logins("v1")
    assert.are.equal(429, res.status)
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
