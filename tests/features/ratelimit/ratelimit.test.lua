-- Rate limiting through the real HTTP stack: GCRA burst and refill, the IETF fields, policy
-- selection, keys, SSE exemption. Runs with tests/features/ratelimit/config.lua.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

local function get(path, headers) return request("GET", path, { headers = headers }) end

-- n requests, returns how many were admitted (200) and the last response
local function burst(n, path, headers)
  local admitted, last = 0, nil
  for _ = 1, n do
    last = get(path, headers)
    if last.status == 200 then admitted = admitted + 1
    else assert.are.equal(429, last.status, "only 200 or 429 expected: " .. last.body) end
  end
  return admitted, last
end

describe("ratelimit", function()
  describe("policy api = { limit = 5, window = 10 } on /api", function()
    it("admits exactly 5, then answers 429 with Retry-After, the IETF fields and a JSON body", function()
      for i = 1, 5 do
        local res = get("/api/items")
        assert.are.equal(200, res.status, "request " .. i)
        assert.are.equal('"api";q=5;w=10', res.headers["ratelimit-policy"])
        -- t: seconds until more quota is available (the draft's meaning): one request drips back every 2 s
        assert.are.equal(('"api";r=%d;t=2'):format(5 - i), res.headers["ratelimit"])
      end
      local res = get("/api/items")
      assert.are.equal(429, res.status)
      assert.are.equal("2", res.headers["retry-after"])
      assert.are.equal('"api";q=5;w=10', res.headers["ratelimit-policy"])
      assert.are.equal('"api";r=0;t=2', res.headers["ratelimit"], "t says what Retry-After says")
      assert.matches("^application/json", res.headers["content-type"])
      assert.are.same({ error = "rate limit exceeded", status = 429, policy = "api", limit = 5, window = 10,
                        retry_after = 2 }, res:json())
      -- the limit is per policy: a path no policy covers still works
      local open = get("/open")
      assert.are.equal(200, open.status)
      assert.is_nil(open.headers["ratelimit"])
    end)

    it("keeps t and Retry-After equal on a 429, and t the wait for the next token when admitted", function()
      assert.are.equal(5, (burst(5, "/api/items")))
      clock.advance(1.5)                 -- half a second before the next token
      local res = get("/api/items")
      assert.are.equal(429, res.status)
      assert.are.equal("1", res.headers["retry-after"])
      assert.are.equal('"api";r=0;t=1', res.headers["ratelimit"])
      clock.advance(0.5)
      res = get("/api/items")
      assert.are.equal(200, res.status)
      assert.are.equal('"api";r=0;t=2', res.headers["ratelimit"], "the token after it is 2 s away")
      clock.advance(5)                   -- 2.5 tokens back: 2 usable, the third in 1 s
      res = get("/api/items")
      assert.are.equal(200, res.status)
      assert.are.equal('"api";r=1;t=1', res.headers["ratelimit"])
      assert.are.equal(200, get("/api/items").status)
      res = get("/api/items")
      assert.are.equal(429, res.status)
      assert.are.equal(res.headers["retry-after"], res.headers["ratelimit"]:match(";t=(%d+)$"))
    end)

    it("refills one token every window/limit = 2 s (GCRA), and rejections add no penalty", function()
      assert.are.equal(5, (burst(6, "/api/items")))
      for _ = 1, 10 do assert.are.equal(429, get("/api/items").status) end
      clock.advance(1)
      assert.are.equal(0, (burst(3, "/api/items")), "half a token is no token")
      clock.advance(1)
      assert.are.equal(1, (burst(3, "/api/items")), "exactly one more after 2 s")
      clock.advance(4)
      assert.are.equal(2, (burst(4, "/api/items")), "two more after 4 s")
    end)

    it("has no double burst at the window edge: at t=10 only the refilled tokens, not a fresh 5", function()
      assert.are.equal(5, (burst(5, "/api/items")))
      clock.advance(2)
      assert.are.equal(1, (burst(2, "/api/items")))
      clock.advance(8)   -- t = 10: a fixed window would grant a fresh 5 here
      assert.are.equal(4, (burst(6, "/api/items")))
    end)

    it("a burst at the end of a quiet period cannot be repeated right after it", function()
      clock.advance(9.5)
      assert.are.equal(5, (burst(5, "/api/items")))
      clock.advance(0.9)   -- crosses t = 10 (fixed-window boundary)
      assert.are.equal(0, (burst(5, "/api/items")))
    end)

    it("does not count SSE streams", function()
      local streams = {}
      for i = 1, 8 do streams[i] = subscribe("/api/events/lobby") end
      assert.are.equal(5, (burst(6, "/api/items")))
      -- and an exhausted client can still open a stream
      local s = subscribe("/api/events/lobby")
      assert.are.equal(200, s.status)
      for _, st in ipairs(streams) do st:close() end
    end)

    it("ignores a spoofed X-Forwarded-For when no proxy is trusted", function()
      for i = 1, 5 do
        assert.are.equal(200, get("/api/items", { ["x-forwarded-for"] = "198.51.100." .. i }).status)
      end
      local res = get("/api/items", { ["x-forwarded-for"] = "198.51.100.99" })
      assert.are.equal(429, res.status)
      clock.advance(2)
      local ip = get("/api/ip", { ["x-forwarded-for"] = "198.51.100.7" })
      assert.are.equal(200, ip.status)
      assert.are.same({ ip = "127.0.0.1" }, ip:json())
    end)
  end)

  describe("policy selection", function()
    it("uses the longest matching prefix (/api/deep: limit 2) with its own bucket", function()
      assert.are.equal(2, (burst(3, "/api/deep/x")))
      local res = get("/api/deep/x")
      assert.are.equal(429, res.status)
      assert.are.equal('"deep";q=2;w=10', res.headers["ratelimit-policy"])
      assert.are.equal("deep", res:json().policy)
      assert.are.equal(5, (burst(6, "/api/items")), "the api bucket was not touched")
    end)

    it("matches prefixes on segment boundaries: /apiary is not under /api", function()
      for _ = 1, 12 do
        local res = get("/apiary")
        assert.are.equal(200, res.status)
        assert.is_nil(res.headers["ratelimit-policy"])
      end
    end)

    it("limits the built-in /metrics with the monitoring policy", function()
      for _ = 1, 3 do assert.are.equal(200, get("/metrics").status) end
      local res = get("/metrics")
      assert.are.equal(429, res.status)
      assert.are.equal('"monitoring";q=3;w=60', res.headers["ratelimit-policy"])
      assert.are.equal("20", res.headers["retry-after"])
      clock.advance(20)
      assert.are.equal(1, (burst(2, "/metrics")))
    end)
  end)

  describe("keys", function()
    it('key = "header:x-api-key" counts each key separately', function()
      assert.are.equal(2, (burst(3, "/partner", { ["x-api-key"] = "alpha" })))
      assert.are.equal(2, (burst(3, "/partner", { ["x-api-key"] = "beta" })))
      assert.are.equal(429, get("/partner", { ["x-api-key"] = "alpha" }).status)
      -- without the header the client address is the key
      assert.are.equal(2, (burst(3, "/partner")))
    end)

    it("a key function decides the bucket (tenant from the query string)", function()
      assert.are.equal(2, (burst(3, "/tenant?tenant=a")))
      local res = get("/tenant?tenant=a")
      assert.are.equal(429, res.status)
      assert.are.equal("tenant", res:json().policy)
      assert.are.equal(2, (burst(3, "/tenant?tenant=b")))
      clock.advance(5)
      assert.are.equal(1, (burst(2, "/tenant?tenant=a")))
    end)
  end)

  describe("virtual clock (docs/testing.md: real time plus what specs add; never backwards)", function()
    local t_first
    it("moves forward by what a spec adds", function()
      -- the test clock is real time plus what specs add: allow for the real seconds that pass
      -- (a loaded machine can stall this spec), measured with os.time's whole seconds
      local wall0 = os.time()
      t_first = clock.now()
      clock.advance(1000)
      local moved = clock.now() - t_first
      -- seconds are microseconds / 1e6 in a double: the difference may round a hair below 1000
      assert.is_true(moved >= 1000 - 1e-6, "moved " .. moved)
      assert.is_true(moved < 1000 + (os.time() - wall0) + 1)
    end)
    it("never goes back between tests, but the buckets are fresh", function()
      assert.is_true(clock.now() >= t_first + 1000 - 1e-6)
      for _ = 1, 5 do assert.are.equal(200, request("GET", "/api/items").status) end
    end)
    it("barely moves on its own while a request travels", function()
      local wall0 = os.time()
      local t0 = clock.now()
      request("GET", "/open")
      assert.is_true(clock.now() - t0 < (os.time() - wall0) + 1)   -- real time only, nothing added
    end)
  end)
end)
