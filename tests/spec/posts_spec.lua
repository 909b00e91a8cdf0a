-- posts_spec: GET/POST /api/rooms/:id/posts, GET/PATCH/DELETE /api/posts/:id
local B = require("tests.spec.board_helper").with(request)

describe("posts", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  local room
  before_each(function() room = B.room("alice", "General") end)

  describe("POST /api/rooms/:id/posts", function()
    it("creates a post by the caller", function()
      local res = B.call("bob", "POST", "/api/rooms/" .. room.id .. "/posts", { json = { body = "hello\nworld " } })
      assert.are.equal(201, res.status)
      local post = res:json()
      assert.are.equal("/api/posts/" .. post.id, res.headers["location"])
      assert.are.equal("hello\nworld", post.body)
      assert.are.equal("bob", post.author)
      assert.are.equal(room.id, post.room_id)
      assert.is_nil(post.edited_at)
      assert.are.same({}, post.reactions)
      assert.matches('"mine":%[%]', res.body)
      assert.matches('"reactions":{}', res.body)
    end)

    it("validates the body", function()
      local cases = {
        { {}, { body = "is required" } },
        { { body = "" }, { body = "must be 1..2000 characters" } },
        { { body = " \n " }, { body = "must be 1..2000 characters" } },
        { { body = string.rep("x", 2001) }, { body = "must be 1..2000 characters" } },
        { { body = true }, { body = "must be a string" } },
        { { body = "a\0b" }, { body = "must not contain control characters" } },
        { { body = "x", room = 1 }, { room = "unknown field" } },
      }
      for _, c in ipairs(cases) do
        local res = B.call("bob", "POST", "/api/rooms/" .. room.id .. "/posts", { json = c[1] })
        assert.are.equal(422, res.status, res.body)
        assert.are.same({ error = "validation failed", status = 422, fields = c[2] }, res:json())
      end
      -- a body of exactly 2000 characters (multi-byte) is fine
      B.post("bob", room.id, string.rep("ü", 2000))
    end)

    it("requires a user and an existing room", function()
      assert.are.equal(401, request("POST", "/api/rooms/" .. room.id .. "/posts", { json = { body = "x" } }).status)
      local res = B.call("bob", "POST", "/api/rooms/999999999/posts", { json = { body = "x" } })
      assert.are.equal(404, res.status)
      assert.are.same({ error = "room not found" }, res:json())
    end)

    it("stores text with quotes and SQL as it is", function()
      local evil = "'); drop table posts; -- \"quoted\" $1"
      local post = B.post("bob", room.id, evil)
      assert.are.equal(evil, request("GET", "/api/posts/" .. post.id):json().body)
    end)
  end)

  describe("GET /api/rooms/:id/posts", function()
    it("lists newest first and pages with a cursor", function()
      local ids = {}
      for i = 1, 5 do ids[i] = B.post("bob", room.id, "p" .. i).id end
      local seen, cursor = {}, nil
      repeat
        local page = request("GET", "/api/rooms/" .. room.id .. "/posts", { query = { limit = 2, cursor = cursor } }):json()
        for _, p in ipairs(page.items) do seen[#seen + 1] = p.body end
        cursor = page.next_cursor ~= app.null and page.next_cursor or nil
      until not cursor
      assert.are.same({ "p5", "p4", "p3", "p2", "p1" }, seen)
    end)

    it("pages by number with ?page=", function()
      for i = 1, 3 do B.post("bob", room.id, "p" .. i) end
      local page = request("GET", "/api/rooms/" .. room.id .. "/posts", { query = { page = 2, limit = 2 } }):json()
      assert.are.equal(3, page.total)
      assert.are.equal(2, page.pages)
      assert.are.equal(1, #page.items)
      assert.are.equal("p1", page.items[1].body)
    end)

    it("only lists the posts of that room", function()
      local other = B.room("alice", "Other")
      B.post("bob", other.id, "elsewhere")
      B.post("bob", room.id, "here")
      local page = request("GET", "/api/rooms/" .. room.id .. "/posts"):json()
      assert.are.equal(1, #page.items)
      assert.are.equal("here", page.items[1].body)
    end)

    it("shows reaction counts and the caller's own reactions", function()
      local post = B.post("bob", room.id, "react to me")
      B.react("alice", post.id, "👍")
      B.react("carol", post.id, "👍")
      B.react("carol", post.id, "🎉")
      local item = B.call("carol", "GET", "/api/rooms/" .. room.id .. "/posts"):json().items[1]
      assert.are.same({ ["👍"] = 2, ["🎉"] = 1 }, item.reactions)
      assert.are.same({ "🎉", "👍" }, item.mine)
      local anon = request("GET", "/api/rooms/" .. room.id .. "/posts")
      assert.matches('"mine":%[%]', anon.body)
    end)

    it("returns an empty array for a room without posts", function()
      local res = request("GET", "/api/rooms/" .. room.id .. "/posts")
      assert.are.equal(200, res.status)
      assert.matches('"items":%[%]', res.body)
      local paged = request("GET", "/api/rooms/" .. room.id .. "/posts", { query = { page = 1 } })
      assert.are.equal(200, paged.status)
      assert.matches('"items":%[%]', paged.body)
      assert.matches('"next_cursor":null', paged.body)
      local body = paged:json()
      assert.are.same({ 20, 1, 0, 1 }, { body.limit, body.page, body.total, body.pages })
      -- past the last page of a room that has posts: still 200 and empty
      B.post("bob", room.id, "only one")
      local past = B.call("bob", "GET", "/api/rooms/" .. room.id .. "/posts?cursor=1"):json()
      assert.are.same({}, past.items)
    end)

    -- The listing, the created post and GET /api/posts/:id are built by different statements
    -- (one round trip each): they must agree field by field, reactions and `mine` included.
    it("lists each post exactly as GET /api/posts/:id shows it, and as it was created", function()
      local created = {}
      for i = 1, 5 do created[i] = B.post(i % 2 == 0 and "bob" or "carol", room.id, "post " .. i) end
      B.react("alice", created[2].id, "👍")
      B.react("carol", created[2].id, "👍")
      B.react("carol", created[2].id, "😂")
      B.react("bob", created[4].id, "🎉")
      assert.are.same(created[5], B.call("bob", "GET", "/api/posts/" .. created[5].id):json())
      for _, user in ipairs({ "carol", "bob" }) do
        for _, url in ipairs({ "/api/rooms/" .. room.id .. "/posts", "/api/rooms/" .. room.id .. "/posts?page=1&limit=3",
                               "/api/rooms/" .. room.id .. "/posts?page=2&limit=3" }) do
          local items = B.call(user, "GET", url):json().items
          assert.is_true(#items > 0)
          for _, item in ipairs(items) do
            assert.are.same(B.call(user, "GET", "/api/posts/" .. item.id):json(), item)
          end
        end
      end
      local item = B.call("carol", "GET", "/api/posts/" .. created[2].id):json()
      assert.are.same({ ["👍"] = 2, ["😂"] = 1 }, item.reactions)
      assert.are.same({ "👍", "😂" }, item.mine)
    end)

    it("answers 404 for a missing room and 400 for bad paging", function()
      assert.are.equal(404, request("GET", "/api/rooms/999999999/posts").status)
      local res = request("GET", "/api/rooms/" .. room.id .. "/posts", { query = { limit = -1 } })
      assert.are.equal(400, res.status)
      assert.are.same({ error = "limit: must be an integer 1..100" }, res:json())
    end)
  end)

  describe("GET /api/posts/:id", function()
    it("returns the post", function()
      local post = B.post("bob", room.id, "single")
      local res = request("GET", "/api/posts/" .. post.id)
      assert.are.equal(200, res.status)
      assert.are.same(post, res:json())
    end)

    it("answers 404 for unknown and malformed ids", function()
      for _, id in ipairs({ "999999999", "x", "0" }) do
        local res = request("GET", "/api/posts/" .. id)
        assert.are.equal(404, res.status)
        assert.are.same({ error = "post not found" }, res:json())
      end
    end)
  end)

  describe("PATCH /api/posts/:id", function()
    it("lets the author edit and marks the post edited", function()
      local post = B.post("bob", room.id, "typo")
      local res = B.call("bob", "PATCH", "/api/posts/" .. post.id, { json = { body = "fixed" } })
      assert.are.equal(200, res.status)
      local got = res:json()
      assert.are.equal("fixed", got.body)
      assert.is_string(got.edited_at)
      assert.are.equal(post.created_at, got.created_at)
    end)

    it("refuses other users, anonymous callers and bad bodies", function()
      local post = B.post("bob", room.id, "mine")
      local res = B.call("alice", "PATCH", "/api/posts/" .. post.id, { json = { body = "hijack" } })
      assert.are.equal(403, res.status)
      assert.are.same({ error = "only the author may edit this post" }, res:json())
      assert.are.equal(401, request("PATCH", "/api/posts/" .. post.id, { json = { body = "x" } }).status)
      res = B.call("bob", "PATCH", "/api/posts/" .. post.id, { json = { body = "" } })
      assert.are.equal(422, res.status)
      assert.are.equal("mine", request("GET", "/api/posts/" .. post.id):json().body)
    end)

    it("answers 404 for a missing post", function()
      assert.are.equal(404, B.call("bob", "PATCH", "/api/posts/999999999", { json = { body = "x" } }).status)
    end)
  end)

  describe("DELETE /api/posts/:id", function()
    it("lets the author delete", function()
      local post = B.post("bob", room.id, "oops")
      assert.are.equal(204, B.call("bob", "DELETE", "/api/posts/" .. post.id).status)
      assert.are.equal(404, request("GET", "/api/posts/" .. post.id).status)
      assert.are.equal(404, B.call("bob", "DELETE", "/api/posts/" .. post.id).status)
    end)

    it("lets the room's creator moderate", function()
      local post = B.post("bob", room.id, "spam")
      assert.are.equal(204, B.call("alice", "DELETE", "/api/posts/" .. post.id).status)
    end)

    it("refuses anyone else", function()
      local post = B.post("bob", room.id, "stay")
      local res = B.call("carol", "DELETE", "/api/posts/" .. post.id)
      assert.are.equal(403, res.status)
      assert.are.same({ error = "only the author or the room's creator may delete this post" }, res:json())
      assert.are.equal(401, request("DELETE", "/api/posts/" .. post.id).status)
      assert.are.equal(200, request("GET", "/api/posts/" .. post.id).status)
    end)
  end)
end)
