-- The runtime around handlers: what a handler's return value becomes, errors, the watchdog,
-- body limits, app.sleep and app.timer on the virtual clock. Runs with tests/features/runtime/config.lua.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

local function get(path) return request("GET", path) end
local function state() return get("/state"):json() end

describe("runtime", function()
  describe("handler results", function()
    it("a status number becomes that status with its reason as text", function()
      local res = get("/created")
      assert.are.equal(201, res.status)
      assert.are.equal("Created\n", res.body)
      assert.are.equal("text/plain; charset=utf-8", res.headers["content-type"])
    end)

    it("nil becomes 204 No Content without a body", function()
      local res = get("/nothing")
      assert.are.equal(204, res.status)
      assert.are.equal("", res.body)
      assert.is_nil(res.headers["content-length"])
      assert.is_nil(res.headers["content-type"])
    end)

    it("an invalid status number, a boolean or a table body give 500 with the reason", function()
      H.is_error(get("/badstatus"), 500, "invalid response status 42: a handler's status must be an integer 200-599")
      H.is_error(get("/badtype"), 500, "handler must return a string, a status number or a response table")
      H.is_error(get("/badbody"), 500, "response body must be a string (use json = ... for tables)")
      H.still_works("/ok")
    end)

    it("a header value with CR/LF gives 500, never an injected header", function()
      local res = get("/badheader")
      H.is_error(res, 500, 'invalid response header "x-evil": names must be tokens, values strings without CR, LF or NUL')
      assert.is_nil(res.headers["x-evil"])
      assert.is_nil(res.headers["set-cookie"])
      H.is_error(get("/badheadername"), 500,
        'invalid response header "bad name": names must be tokens, values strings without CR, LF or NUL')
      H.still_works("/ok")
    end)

    it("a json value that cannot be encoded gives 500", function()
      H.is_error(get("/badjson"), 500, "response json cannot be encoded: cannot encode a function, thread or userdata as JSON")
      H.is_error(get("/nanjson"), 500, "response json cannot be encoded: cannot encode NaN or infinity as JSON")
      H.still_works("/ok")
    end)
  end)

  describe("errors (env = development)", function()
    it("a handler error gives 500 JSON with the message", function()
      H.is_error(get("/boom"), 500, app.config.scripts[1] .. ":4: kaboom: secret detail")
      H.still_works("/ok")
    end)

    it("an error table with a status uses that status", function()
      local res = get("/boom/table")
      assert.are.equal(422, res.status)
      assert.are.equal(422, res:json().status)
      H.still_works("/ok")
    end)
  end)

  describe("watchdog (limits.script_timeout = 0.5)", function()
    it("stops a runaway handler with 500; the next request works", function()
      H.is_error(get("/runaway"), 500, "script ran too long without yielding (limits.script_timeout)")
      H.still_works("/ok")
      H.is_error(get("/runaway"), 500, "script ran too long without yielding (limits.script_timeout)")
      H.still_works("/ok")
    end)

    it("keeps watching after a handler caught its error with pcall", function()
        H.is_error(get("/runaway/twice"), 500, "script ran too long without yielding (limits.script_timeout)")
        H.still_works("/ok")
      end, true)
  end)

  describe("limits", function()
    it("a body over limits.body_size (1024) gives 413; one at the limit is accepted", function()
      H.is_error(request("POST", "/echo", { body = string.rep("x", 1025) }), 413, "request body too large")
      local res = request("POST", "/echo", { body = string.rep("y", 1024) })
      assert.are.equal(200, res.status)
      assert.are.equal(string.rep("y", 1024), res.body)
    end)
  end)

  describe("request tables outliving their request", function()
    it("read as empty once the connection is gone, never stale or freed memory", function()
      assert.are.equal(200, request("GET", "/keep?a=1", { headers = { host = "example" } }).status)
      for _ = 1, 50 do request("GET", "/ok") end      -- the connection is closed and reused
      local res = request("GET", "/kept")
      assert.are.equal(200, res.status)
      local j = res:json()
      assert.are.equal("GET", j.method)              -- eager fields stay
      assert.are.equal("/keep", j.path)
      assert.are.same({}, j.query)                   -- lazy fields of a finished request: empty
      H.still_works("/ok")
    end)
  end)

  describe("virtual time", function()
    it("app.sleep in a handler returns", function()
      assert.are.equal("slept\n", get("/short-sleep").body)
    end)

    -- The virtual clock is real time plus what specs add (docs/testing.md): the margins below are
    -- whole seconds of real time, so a loaded machine's pauses between two lines do not matter.
    it("app.sleep wakes exactly when clock.advance reaches it", function()
      local before = state().naps
      local t_post = clock.now()
      assert.are.equal(202, request("POST", "/nap?s=30").status)
      for _ = 1, 100 do if state().napping then break end end
      assert.is_true(state().napping, "the background task started")
      clock.advance(29)
      assert.are.equal(before, state().naps, "still asleep after 29 s")
      clock.advance(1)
      local s = state()
      assert.are.equal(before + 1, s.naps)
      -- slept its 30 s, and woke no later than this advance: at most the real time that passed
      assert.is_true(s.nap_took >= 30 - 1e-3 and s.nap_took <= clock.now() - t_post,
        ("slept %.3f s of virtual time, %.3f s passed"):format(s.nap_took, clock.now() - t_post))
    end)

    it("app.timer fires when due under clock.advance, repeating ones every period", function()
      local s0 = state()
      assert.are.equal(202, request("POST", "/timers").status)
      -- each check sits a second or more away from every due time (5, 10, 15, 20): real time
      -- passing between the lines (the clock's other part) cannot move a timer across a check
      clock.advance(4)       -- t = 4
      assert.are.same({ s0.once, s0.ticks }, { state().once, state().ticks })
      clock.advance(2)       -- t = 6
      assert.are.same({ s0.once, s0.ticks + 1 }, { state().once, state().ticks })
      clock.advance(5)       -- t = 11
      assert.are.same({ s0.once + 1, s0.ticks + 2 }, { state().once, state().ticks })
      clock.advance(5)       -- t = 16
      clock.advance(5)       -- t = 21
      assert.are.same({ s0.once + 1, s0.ticks + 4 }, { state().once, state().ticks })
    end)
  end)
end)
