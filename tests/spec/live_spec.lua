-- live_spec: the room stream GET /api/rooms/:id/events (SSE) and every event the API publishes
local B = require("tests.spec.board_helper").with(request)

local function enc(s)
  return (s:gsub("[^%w]", function(c) return string.format("%%%02X", c:byte()) end))
end

describe("live room events", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  local room
  before_each(function() room = B.room("alice", "Live") end)

  local function listen(user, id)
    return subscribe("/api/rooms/" .. (id or room.id) .. "/events", { headers = B.as(user) })
  end

  -- the next event, decoded; fails the test when none comes within a second
  local function next_of(s, want)
    local ev = s:next_event(1)
    assert.is_not_nil(ev, "no " .. want .. " event within 1 s")
    assert.are.equal(want, ev.event)
    assert.matches("^%d+$", ev.id)
    return B.decode(ev.data), ev
  end

  it("delivers post.created with the whole post", function()
    local s = listen("carol")
    local post = B.post("bob", room.id, "hello live")
    local got = next_of(s, "post.created")
    assert.are.same(post.id, got.id)
    assert.are.equal("hello live", got.body)
    assert.are.equal("bob", got.author)
    assert.are.equal(room.id, got.room_id)
    assert.are.same({}, got.reactions)
  end)

  it("delivers post.updated and post.deleted", function()
    local post = B.post("bob", room.id, "draft")
    local s = listen("carol")
    assert.are.equal(200, B.call("bob", "PATCH", "/api/posts/" .. post.id, { json = { body = "final" } }).status)
    local upd = next_of(s, "post.updated")
    assert.are.equal("final", upd.body)
    assert.is_string(upd.edited_at)
    assert.are.equal(204, B.call("alice", "DELETE", "/api/posts/" .. post.id).status)
    assert.are.same({ id = post.id, room_id = room.id, by = "alice" }, next_of(s, "post.deleted"))
  end)

  it("delivers reaction events with the new counts", function()
    local post = B.post("bob", room.id, "react")
    local s = listen("carol")
    B.react("alice", post.id, "🎉")
    assert.are.same({ post_id = post.id, room_id = room.id, emoji = "🎉", user = "alice", action = "added",
                      count = 1, reactions = { ["🎉"] = 1 } }, next_of(s, "reaction"))
    assert.are.equal(200, B.call("alice", "DELETE", "/api/posts/" .. post.id .. "/reactions/" .. enc("🎉")).status)
    local r = next_of(s, "reaction")
    assert.are.equal("removed", r.action)
    assert.are.equal(0, r.count)
  end)

  it("announces presence.join and presence.leave", function()
    local a = listen("alice")
    local b = listen("bob")
    assert.are.same({ room_id = room.id, user = "bob" }, next_of(a, "presence.join"))
    b:close()
    -- The server learns that bob left when a write to his stream fails: the heartbeat
    -- (sse.heartbeat = 30 s) finds a dead peer at the latest.
    local ev = a:next_event(0.3)
    for _ = 1, 3 do
      if ev then break end
      clock.advance(30)
      ev = a:next_event(0.3)
    end
    assert.is_not_nil(ev, "no presence.leave after three heartbeats")
    assert.are.equal("presence.leave", ev.event)
    assert.are.same({ room_id = room.id, user = "bob" }, B.decode(ev.data))
  end)

  it("announces presence.leave as soon as the client disconnects", function()
    local a = listen("alice")
    local b = listen("bob")
    assert.are.same({ room_id = room.id, user = "bob" }, next_of(a, "presence.join"))
    b:close()
    -- no heartbeat needed: the server notices the closed socket at once
    local ev = a:next_event(1)
    assert.is_not_nil(ev, "no presence.leave within 1 s of the disconnect")
    assert.are.equal("presence.leave", ev.event)
    assert.are.same({ room_id = room.id, user = "bob" }, B.decode(ev.data))
  end)

  it("delivers room.updated and room.deleted", function()
    local s = listen("bob")
    B.call("alice", "PATCH", "/api/rooms/" .. room.id, { json = { title = "Renamed" } })
    assert.are.equal("Renamed", next_of(s, "room.updated").title)
    B.call("alice", "DELETE", "/api/rooms/" .. room.id)
    assert.are.same({ id = room.id }, next_of(s, "room.deleted"))
  end)

  it("keeps rooms apart", function()
    local other = B.room("alice", "Elsewhere")
    local s = listen("carol")
    B.post("bob", other.id, "not for you")
    B.post("bob", room.id, "for you")
    assert.are.equal("for you", next_of(s, "post.created").body)
  end)

  it("publishes nothing when a write fails", function()
    local s = listen("carol")
    assert.are.equal(422, B.call("bob", "POST", "/api/rooms/" .. room.id .. "/posts", { json = { body = "" } }).status)
    assert.are.equal(403, B.call("bob", "PATCH", "/api/rooms/" .. room.id, { json = { title = "x" } }).status)
    assert.is_nil(s:next_event(0.2))
  end)

  it("replays what a client missed from Last-Event-ID", function()
    local s = listen("carol")
    B.post("bob", room.id, "one")
    local _, first = next_of(s, "post.created")
    s:close()
    B.post("bob", room.id, "two")
    local again = subscribe("/api/rooms/" .. room.id .. "/events", { headers = B.as("carol"), last_event_id = first.id })
    -- carol's own reconnect join may come first, then the missed post
    local ev = again:next_event(1)
    while ev and ev.event ~= "post.created" do ev = again:next_event(1) end
    assert.is_not_nil(ev)
    assert.are.equal("two", B.decode(ev.data).body)
  end)

  it("accepts the session cookie (what EventSource sends)", function()
    local res = request("POST", "/api/signup", { json = { name = "dora", password = "dora's password" } })
    local sid = res.headers["set-cookie"]:match("board_session=([%w._-]+)")
    local watcher = listen("alice")
    local s = subscribe("/api/rooms/" .. room.id .. "/events", { headers = { cookie = "board_session=" .. sid } })
    assert.are.equal("dora", next_of(watcher, "presence.join").user)
    B.post("bob", room.id, "cookie ok")
    assert.are.equal("cookie ok", next_of(s, "post.created").body)
  end)

  it("refuses a stream without a user (401)", function()
    local ok, err = pcall(subscribe, "/api/rooms/" .. room.id .. "/events")
    assert.is_false(ok)
    assert.are.equal(401, err.status)
    assert.matches("login required", err.body, 1, true)
  end)

  it("accepts a bearer token and refuses a bad or expired one (401)", function()
    local watcher = listen("alice")
    local s = subscribe("/api/rooms/" .. room.id .. "/events", { headers = B.as("tok") })
    assert.are.equal("tok", next_of(watcher, "presence.join").user)
    s:close()
    local expired = app.jwt.sign({ sub = "tok", aud = "board", exp = os.time() - 120 }, app.config.session.keys[1])
    for _, t in ipairs({ expired, "garbage" }) do
      local ok, err = pcall(subscribe, "/api/rooms/" .. room.id .. "/events", { headers = { authorization = "Bearer " .. t } })
      assert.is_false(ok)
      assert.are.equal(401, err.status)
      assert.matches("token: ", err.body, 1, true)
    end
  end)

  it("refuses a stream for a missing room (404)", function()
    for _, id in ipairs({ "999999999", "nope" }) do
      local ok, err = pcall(subscribe, "/api/rooms/" .. id .. "/events", { headers = B.as("alice") })
      assert.is_false(ok)
      assert.are.equal(404, err.status)
      assert.matches("room not found", err.body, 1, true)
    end
  end)
end)
