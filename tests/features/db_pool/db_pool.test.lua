-- connection_limit=1&pool_timeout=1: a request waiting for the busy connection gets 503 after ~1 s.
-- This one needs real time (the pool's wait is not on the virtual clock).
local ffi = require "ffi"
pcall(ffi.cdef, "struct feat_timespec { long tv_sec; long tv_nsec; }; int clock_gettime(int, struct feat_timespec *);")
local function real_now()
  local ts = ffi.new("struct feat_timespec")
  ffi.C.clock_gettime(1, ts)                 -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- waits (real time, at most 10 s) until the background query (4 s) has given the connection back
local function wait_released()
  local t0 = real_now()
  while request("GET", "/holding"):json().holding do
    if real_now() - t0 > 10 then error("the background query never ended") end
    -- each request is a turn of the event loop; no app.sleep: it would depend on the virtual clock
  end
end

local function hold()
  wait_released()
  assert.are.equal(202, request("POST", "/hold").status)
  for _ = 1, 200 do
    if request("GET", "/holding"):json().holding then return end
  end
  error("the background query never started")
end

describe("db pool (connection_limit=1, pool_timeout=1)", function()
  after_each(wait_released)

  it("works while the connection is free", function()
    assert.are.same({ one = 1 }, request("GET", "/one"):json())
  end)

  it("a request that waits pool_timeout gets 503 with Retry-After after about 1 s", function()
    hold()
    local t0 = real_now()
    local res = request("GET", "/one")
    local waited = real_now() - t0
    assert.are.equal(503, res.status, res.body)
    assert.are.equal("1", res.headers["retry-after"])
    local body = res:json()
    assert.are.equal(503, body.status)
    assert.matches("pool timeout", body.error, 1, true)
    -- not before pool_timeout; well before the 4 s hold ends (and the 503, not a 200, shows that
    -- the wait did not end with the connection coming back)
    assert.is_true(waited >= 0.9 and waited < 3.0, ("waited %.2f s"):format(waited))
  end)

  it("the error is catchable: code = pool_timeout", function()
    hold()
    local res = request("GET", "/one/caught")
    assert.are.equal(503, res.status)
    local e = res:json()
    assert.are.equal("pool_timeout", e.code, res.body)
    assert.matches("connection_limit=1", e.message, 1, true)
  end)

  it("once the connection is back the next request works", function()
    wait_released()
    local res = request("GET", "/one")
    assert.are.equal(200, res.status, res.body)
    assert.are.same({ one = 1 }, res:json())
  end)
end)
