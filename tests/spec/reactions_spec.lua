-- reactions_spec: GET/POST /api/posts/:id/reactions, DELETE /api/posts/:id/reactions/:emoji
local B = require("tests.spec.board_helper").with(request)

local function enc(s)
  return (s:gsub("[^%w]", function(c) return string.format("%%%02X", c:byte()) end))
end

describe("reactions", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  local post
  before_each(function()
    local room = B.room("alice", "General")
    post = B.post("bob", room.id, "nice work")
  end)

  describe("POST /api/posts/:id/reactions", function()
    it("adds a reaction and returns the new counts", function()
      local res = B.call("alice", "POST", "/api/posts/" .. post.id .. "/reactions", { json = { emoji = "👍" } })
      assert.are.equal(201, res.status)
      assert.are.same({ post_id = post.id, room_id = post.room_id, emoji = "👍", user = "alice", action = "added",
                        count = 1, reactions = { ["👍"] = 1 } }, res:json())
      local r2 = B.react("carol", post.id, "👍")
      assert.are.equal(2, r2.count)
      -- the counts cover every emoji on the post, the new reaction included
      local r3 = B.call("carol", "POST", "/api/posts/" .. post.id .. "/reactions", { json = { emoji = "🎉" } }):json()
      assert.are.same({ ["👍"] = 2, ["🎉"] = 1 }, r3.reactions)
      assert.are.equal(1, r3.count)
      -- and match what GET /api/posts/:id shows afterwards
      assert.are.same(r3.reactions, B.call("bob", "GET", "/api/posts/" .. post.id):json().reactions)
    end)

    it("answers 409 when the user already reacted with that emoji", function()
      B.react("alice", post.id, "🎉")
      local res = B.call("alice", "POST", "/api/posts/" .. post.id .. "/reactions", { json = { emoji = "🎉" } })
      assert.are.equal(409, res.status)
      assert.are.same({ error = "emoji: you already reacted with 🎉" }, res:json())
      -- another emoji by the same user is fine
      assert.are.equal(201, B.call("alice", "POST", "/api/posts/" .. post.id .. "/reactions", { json = { emoji = "❤️" } }).status)
    end)

    it("validates the emoji", function()
      local cases = {
        { {}, { emoji = "is required" } },
        { { emoji = 1 }, { emoji = "must be a string" } },
        { { emoji = "🦄" }, { emoji = 'must be one of "👍", "❤️", "😂", "🎉", "😮", "😢"' } },
        { { emoji = "👍", extra = 1 }, { extra = "unknown field" } },
      }
      for _, c in ipairs(cases) do
        local res = B.call("alice", "POST", "/api/posts/" .. post.id .. "/reactions", { json = c[1] })
        assert.are.equal(422, res.status, res.body)
        assert.are.same({ error = "validation failed", status = 422, fields = c[2] }, res:json())
      end
    end)

    it("requires a user and an existing post", function()
      assert.are.equal(401, request("POST", "/api/posts/" .. post.id .. "/reactions", { json = { emoji = "👍" } }).status)
      local res = B.call("alice", "POST", "/api/posts/999999999/reactions", { json = { emoji = "👍" } })
      assert.are.equal(404, res.status)
      assert.are.same({ error = "post not found" }, res:json())
    end)
  end)

  describe("GET /api/posts/:id/reactions", function()
    it("lists each emoji with its count and users, first reaction first", function()
      B.react("alice", post.id, "😂")
      B.react("bob", post.id, "👍")
      B.react("carol", post.id, "😂")
      local res = request("GET", "/api/posts/" .. post.id .. "/reactions")
      assert.are.equal(200, res.status)
      assert.are.same({ post_id = post.id, reactions = {
        { emoji = "😂", count = 2, users = { "alice", "carol" } },
        { emoji = "👍", count = 1, users = { "bob" } },
      } }, res:json())
    end)

    it("returns an empty array when nobody reacted", function()
      local res = request("GET", "/api/posts/" .. post.id .. "/reactions")
      assert.matches('"reactions":%[%]', res.body)
    end)

    it("answers 404 for a missing post", function()
      assert.are.equal(404, request("GET", "/api/posts/999999999/reactions").status)
    end)
  end)

  describe("DELETE /api/posts/:id/reactions/:emoji", function()
    it("removes the caller's reaction only", function()
      B.react("alice", post.id, "👍")
      B.react("carol", post.id, "👍")
      local res = B.call("alice", "DELETE", "/api/posts/" .. post.id .. "/reactions/" .. enc("👍"))
      assert.are.equal(200, res.status)
      local got = res:json()
      assert.are.equal("removed", got.action)
      assert.are.equal(1, got.count)
      assert.are.same({ ["👍"] = 1 }, got.reactions)
      assert.are.same({ "carol" }, request("GET", "/api/posts/" .. post.id .. "/reactions"):json().reactions[1].users)
    end)

    it("answers 404 when there is nothing to remove", function()
      local res = B.call("alice", "DELETE", "/api/posts/" .. post.id .. "/reactions/" .. enc("👍"))
      assert.are.equal(404, res.status)
      assert.are.same({ error = "reaction not found: you have not reacted with 👍" }, res:json())
      assert.are.equal(404, B.call("alice", "DELETE", "/api/posts/999999999/reactions/" .. enc("👍")).status)
      assert.are.equal(401, request("DELETE", "/api/posts/" .. post.id .. "/reactions/" .. enc("👍")).status)
    end)

    it("goes away with its post", function()
      B.react("alice", post.id, "👍")
      assert.are.equal(204, B.call("bob", "DELETE", "/api/posts/" .. post.id).status)
      assert.are.equal(0, #app.db.query("select 1 from reactions where post_id = $1", post.id))
    end)
  end)
end)
