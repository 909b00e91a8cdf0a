-- Server-Sent Events through the real stack: publish, ids, replay, gaps, caps, heartbeats,
-- the HTTP publish endpoint and presence callbacks. Runs with tests/features/sse/config.lua.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

local function publish(room, event, data)
  local res = request("POST", "/pub/" .. room, { json = { event = event, data = data } })
  assert.are.equal(201, res.status, res.body)
  return res:json()
end

-- reads the stream until `n` comments (heartbeats, the opening ": ok") have come, failing on an
-- event; bounded by ~3 s of real time, far from the next 5 s heartbeat (a loaded machine may
-- take a moment to deliver one: the count is what is checked, not how fast)
local function until_comments(s, n)
  for _ = 1, 60 do
    if s:comments() >= n then return end
    assert.is_nil(s:next_event(0.05), "a heartbeat is not an event")
  end
end

-- the server notices a closed client asynchronously: give its loop a few turns
local function settle()
  for _ = 1, 3 do request("GET", "/ok") end
end

describe("sse", function()
  after_each(settle)

  describe("publish from a handler", function()
    it("delivers the event name and data", function()
      local s = subscribe("/events/a")
      local p = publish("a", "chat", "hello")
      local ev = s:next_event(1)
      assert.are.same({ id = p.sid, event = "chat", data = "hello" }, ev)
    end)

    it("splits multi-line data into data: lines that the client joins back", function()
      local s = subscribe("/events/a")
      publish("a", "chat", "a\nb")
      assert.are.equal("a\nb", s:next_event(1).data)
      publish("a", nil, "x\r\ny\rz")
      local ev = s:next_event(1)
      assert.are.equal("x\ny\nz", ev.data)
      assert.is_nil(ev.event, "no event: line means type message")
    end)

    it("sends table data as JSON", function()
      local s = subscribe("/events/a")
      publish("a", "obj", { text = "hi", n = 3 })
      local ev = s:next_event(1)
      assert.are.same({ text = "hi", n = 3 }, app.json.decode(ev.data))
    end)

    it("gives increasing ids, delivered in order", function()
      local s = subscribe("/events/a")
      local prev = 0
      for i = 1, 5 do
        publish("a", "n", tostring(i))
        local ev = s:next_event(1)
        assert.are.equal(tostring(i), ev.data)
        assert.is_true(tonumber(ev.id) > prev, "ids increase")
        prev = tonumber(ev.id)
      end
    end)

    it("only delivers a channel's events to its subscribers", function()
      local a, b = subscribe("/events/a"), subscribe("/events/b")
      publish("b", "x", "for b")
      assert.are.equal("for b", b:next_event(1).data)
      assert.is_nil(a:next_event(0.2))
    end)

    -- sluice test numbers events from 1000 (testing_exec in core/testing.c), production from ms * 1000 (16 digits):
    -- a literal production-sized id shows what a handler returning the publish id sends.
    it("a production-sized event id survives { json = { id = id } }", function()
        local res = request("GET", "/bigid")
        assert.are.equal('{"id":1764226953000123}', res.body)
      end)

    it("rejects CR/LF in an event name: app.publish raises, the handler answers 500", function()
      local s = subscribe("/events/x")
      local res = request("POST", "/badpub")
      assert.are.equal(500, res.status)
      assert.matches("^application/json", res.headers["content-type"])
      local err = res:json()
      assert.are.equal(500, err.status)
      assert.matches("app.publish", err.error, 1, true)
      assert.is_nil(s:next_event(0.2), "nothing was published")
      H.still_works("/ok")
    end)
  end)

  describe("replay with Last-Event-ID", function()
    it("sends exactly the missed events in order, then live ones", function()
      local first = publish("r", "m", "1")
      local two = publish("r", "m", "2")
      local three = publish("r", "m", "3")
      local s = subscribe("/events/r", { last_event_id = first.sid })
      assert.are.same({ id = two.sid, event = "m", data = "2" }, s:next_event(1))
      assert.are.same({ id = three.sid, event = "m", data = "3" }, s:next_event(1))
      assert.is_nil(s:next_event(0.2), "nothing else replayed")
      local four = publish("r", "m", "4")
      assert.are.same({ id = four.sid, event = "m", data = "4" }, s:next_event(1))
    end)

    it("sends sluice-gap first when the id is older than the retention (sse.retention = 3)", function()
      local ids = {}
      for i = 1, 6 do ids[i] = publish("g", "m", tostring(i)).sid end
      local s = subscribe("/events/g", { last_event_id = ids[1] })
      local gap = s:next_event(1)
      assert.are.equal("sluice-gap", gap.event)
      assert.is_nil(gap.id, "the gap event carries no id")
      local g = app.json.decode(gap.data)
      assert.are.equal("room:g", g.channel)
      assert.are.equal(ids[1], string.format("%.0f", g.last_event_id))
      assert.are.equal(ids[4], string.format("%.0f", g.oldest))
      for i = 4, 6 do assert.are.same({ id = ids[i], event = "m", data = tostring(i) }, s:next_event(1)) end
      assert.is_nil(s:next_event(0.2))
    end)

    it("answers 400 to a Last-Event-ID that is not a number", function()
      local ok, err = pcall(subscribe, "/events/r", { last_event_id = "abc" })
      assert.is_false(ok)
      assert.are.equal(400, err.status)
      H.still_works("/ok")
    end)
  end)

  describe("caps", function()
    it("refuses the 3rd stream of one user with 429 and a JSON reason (sse.per_user = 2)", function()
      local a1 = subscribe("/events/c", { headers = { ["x-user"] = "alice" } })
      local a2 = subscribe("/events/c", { headers = { ["x-user"] = "alice" } })
      local ok, err = pcall(subscribe, "/events/c", { headers = { ["x-user"] = "alice" } })
      assert.is_false(ok)
      assert.are.equal(429, err.status)
      assert.are.same({ error = "too many event streams for this user (sse.per_user = 2)", status = 429 },
        app.json.decode(err.body))
      assert.are.equal("1", err.headers["retry-after"])
      -- another user is not affected, and a closed stream frees its slot
      local b = subscribe("/events/c", { headers = { ["x-user"] = "bob" } })
      b:close()
      a1:close()
      settle()
      local a3 = subscribe("/events/c", { headers = { ["x-user"] = "alice" } })
      assert.are.equal(200, a3.status)
    end)

    it("refuses streams beyond sse.max_connections = 3 with 503", function()
      local s = {}
      for i = 1, 3 do s[i] = subscribe("/events/t") end
      local ok, err = pcall(subscribe, "/events/t")
      assert.is_false(ok)
      assert.are.equal(503, err.status)
      assert.are.same({ error = "server at sse.max_connections, retry later", status = 503 }, app.json.decode(err.body))
      H.still_works("/ok")
      s[1]:close()
      settle()
      assert.are.equal(200, subscribe("/events/t").status)
    end)

    it("a refusing authorizer ({ status = 401 }) gives 401 with its body", function()
      local ok, err = pcall(subscribe, "/events/a", { headers = { ["x-deny"] = "1" } })
      assert.is_false(ok)
      assert.are.equal(401, err.status)
      assert.are.same({ error = "who are you?" }, app.json.decode(err.body))
      H.still_works("/ok")
      assert.are.equal(200, subscribe("/events/a").status)
    end)
  end)

  describe("heartbeats (sse.heartbeat = 5)", function()
    it("sends a comment every 5 s of virtual time and no event", function()
      local s = subscribe("/events/hb")
      until_comments(s, 1)               -- what the server sent at the start
      local c0 = s:comments()
      clock.advance(5)
      until_comments(s, c0 + 1)
      assert.is_nil(s:next_event(0.2), "a heartbeat is not an event")
      assert.are.equal(c0 + 1, s:comments())
      clock.advance(5)
      until_comments(s, c0 + 2)
      assert.is_nil(s:next_event(0.2))
      assert.are.equal(c0 + 2, s:comments())
    end)

    it("sends no heartbeat before 5 s", function()
      local s = subscribe("/events/hb")
      until_comments(s, 1)
      local c0 = s:comments()
      clock.advance(4)
      assert.is_nil(s:next_event(0.2))
      assert.are.equal(c0, s:comments())
    end)
  end)

  describe("HTTP publish endpoint", function()
    it("publishes with the bearer token: 201 { id }", function()
      local s = subscribe("/events/h")
      local res = request("POST", "/_sluice/publish", {
        headers = { authorization = "Bearer s3cret-token" },
        json = { channel = "room:h", event = "ext", data = { v = 1 } },
      })
      assert.are.equal(201, res.status)
      local id = res.body:match('^{"id":(%d+)}$')
      assert.is_not_nil(id, res.body)
      local ev = s:next_event(1)
      assert.are.equal(id, ev.id)
      assert.are.equal("ext", ev.event)
      assert.are.same({ v = 1 }, app.json.decode(ev.data))
    end)

    it("refuses a wrong token with 401 and publishes nothing", function()
      local s = subscribe("/events/h")
      for _, auth in ipairs({ "Bearer wrong", "Bearer s3cret-token-and-more", "Bearer s3cret-toke", "s3cret-token" }) do
        local res = request("POST", "/_sluice/publish", {
          headers = { authorization = auth }, json = { channel = "room:h", data = "x" } })
        H.is_error(res, 401, "publish requires Authorization: Bearer <sse.publish_token>")
      end
      H.is_error(request("POST", "/_sluice/publish", { json = { channel = "room:h", data = "x" } }),
        401, "publish requires Authorization: Bearer <sse.publish_token>")
      assert.is_nil(s:next_event(0.2))
      H.still_works("/ok")
    end)

    it("answers 400 to a body without a channel", function()
      local res = request("POST", "/_sluice/publish", {
        headers = { authorization = "Bearer s3cret-token" }, json = { data = "x" } })
      H.is_error(res, 400, "channel is required")
      local res2 = request("POST", "/_sluice/publish", {
        headers = { authorization = "Bearer s3cret-token" }, body = "not json" })
      H.is_error(res2, 400, "body must be a JSON object {channel, event, data}")
      H.still_works("/ok")
    end)
  end)

  describe("presence", function()
    it("runs the authorizer's on_close when the client closes", function()
      local before = request("GET", "/closes"):json().n
      local s = subscribe("/events/p")
      assert.are.equal(before, request("GET", "/closes"):json().n)
      s:close()
      settle()
      assert.are.equal(before + 1, request("GET", "/closes"):json().n)
    end)
  end)
end)
