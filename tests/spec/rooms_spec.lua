-- rooms_spec: GET/POST /api/rooms, GET/PATCH/DELETE /api/rooms/:id
local B = require("tests.spec.board_helper").with(request)

describe("rooms", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  describe("POST /api/rooms", function()
    it("creates a room owned by the caller", function()
      local res = B.call("alice", "POST", "/api/rooms", { json = { title = "  General  ", description = "everything" } })
      assert.are.equal(201, res.status)
      assert.matches("^application/json", res.headers["content-type"])
      local room = res:json()
      assert.is_number(room.id)
      assert.are.equal("/api/rooms/" .. room.id, res.headers["location"])
      assert.are.equal("General", room.title)              -- trimmed
      assert.are.equal("everything", room.description)
      assert.are.equal("alice", room.created_by)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", room.created_at)
    end)

    it("defaults the description to an empty string", function()
      assert.are.equal("", B.room("alice", "Quiet").description)
    end)

    it("counts characters, not bytes, for the title limit", function()
      local title = string.rep("é", 100)
      assert.are.equal(title, B.room("alice", title).title)
      local res = B.call("alice", "POST", "/api/rooms", { json = { title = string.rep("é", 101) } })
      assert.are.equal(422, res.status)
      assert.are.same({ error = "validation failed", status = 422, fields = { title = "must be 1..100 characters" } }, res:json())
    end)

    it("requires a user", function()
      local res = request("POST", "/api/rooms", { json = { title = "x" } })
      assert.are.equal(401, res.status)
      assert.matches("^login required", res:json().error)
    end)

    it("rejects a bad bearer token and ignores X-User", function()
      local res = request("POST", "/api/rooms", { headers = { authorization = "Bearer not.a.token" }, json = { title = "x" } })
      assert.are.equal(401, res.status)
      assert.are.same({ error = "token: malformed token" }, res:json())
      res = request("POST", "/api/rooms", { headers = { ["x-user"] = "bob" }, json = { title = "x" } })
      assert.are.equal(401, res.status)
      assert.matches("^login required", res:json().error)
    end)

    it("validates the title", function()
      local cases = {
        { {}, { title = "is required" } },
        { { title = "" }, { title = "must be 1..100 characters" } },
        { { title = "   " }, { title = "must be 1..100 characters" } },
        { { title = string.rep("x", 101) }, { title = "must be 1..100 characters" } },
        { { title = 42 }, { title = "must be a string" } },
        { { title = "a\1b" }, { title = "must not contain control characters" } },
        { { title = "two\nlines" }, { title = "must not contain control characters" } },
        { { title = "\255" }, { title = "must be UTF-8 text" } },
        { { title = "ok", description = string.rep("d", 501) }, { description = "must be at most 500 characters" } },
        { { title = "ok", colour = "red" }, { colour = "unknown field" } },
        -- every failing field at once
        { { title = 42, description = string.rep("d", 501), colour = "red" },
          { title = "must be a string", description = "must be at most 500 characters", colour = "unknown field" } },
      }
      for _, c in ipairs(cases) do
        local res = B.call("alice", "POST", "/api/rooms", { json = c[1] })
        assert.are.equal(422, res.status, res.body)
        assert.are.same({ error = "validation failed", status = 422, fields = c[2] }, res:json())
      end
    end)

    it("rejects bodies that are not a JSON object", function()
      local res = B.call("alice", "POST", "/api/rooms", { body = "{nope", headers = { ["content-type"] = "application/json" } })
      assert.are.equal(400, res.status)
      assert.matches("^invalid JSON", res:json().error)
      res = B.call("alice", "POST", "/api/rooms", { json = { "a", "b" } })
      assert.are.equal(400, res.status)
      assert.are.same({ error = "body: must be a JSON object" }, res:json())
      res = B.call("alice", "POST", "/api/rooms", { body = "title=x", headers = { ["content-type"] = "text/plain" } })
      assert.are.equal(415, res.status)
      res = B.call("alice", "POST", "/api/rooms", { headers = { ["content-type"] = "application/json" } })
      assert.are.equal(400, res.status)
    end)

    it("answers 409 for a title that exists, whatever its case", function()
      B.room("alice", "Ops")
      local res = B.call("bob", "POST", "/api/rooms", { json = { title = "OPS" } })
      assert.are.equal(409, res.status)
      assert.are.same({ error = "title: a room with this title already exists" }, res:json())
    end)
  end)

  describe("GET /api/rooms/:id", function()
    it("returns the room with its post count", function()
      local room = B.room("alice", "Design")
      B.post("bob", room.id, "one")
      B.post("bob", room.id, "two")
      local res = request("GET", "/api/rooms/" .. room.id)
      assert.are.equal(200, res.status)
      local got = res:json()
      assert.are.equal(2, got.post_count)
      got.post_count = nil
      assert.are.same(room, got)
    end)

    it("answers 404 for unknown and malformed ids", function()
      for _, id in ipairs({ "999999999", "abc", "0", "-1", "1.5", "99999999999999999999" }) do
        local res = request("GET", "/api/rooms/" .. id)
        assert.are.equal(404, res.status, id)
        assert.are.same({ error = "room not found" }, res:json())
      end
    end)
  end)

  describe("PATCH /api/rooms/:id", function()
    it("renames a room and keeps what was not sent", function()
      local room = B.room("alice", "Old name", "desc")
      local res = B.call("alice", "PATCH", "/api/rooms/" .. room.id, { json = { title = "New name" } })
      assert.are.equal(200, res.status)
      local got = res:json()
      assert.are.equal("New name", got.title)
      assert.are.equal("desc", got.description)
      assert.are.equal("New name", request("GET", "/api/rooms/" .. room.id):json().title)
      res = B.call("alice", "PATCH", "/api/rooms/" .. room.id, { json = { description = "" } })
      assert.are.equal("", res:json().description)
    end)

    it("lets only the creator change it", function()
      local room = B.room("alice", "Mine")
      local res = B.call("bob", "PATCH", "/api/rooms/" .. room.id, { json = { title = "Bob's" } })
      assert.are.equal(403, res.status)
      assert.are.same({ error = "only alice, who created this room, may change it" }, res:json())
      assert.are.equal(401, request("PATCH", "/api/rooms/" .. room.id, { json = { title = "x" } }).status)
    end)

    it("validates and detects duplicates", function()
      local room = B.room("alice", "First")
      B.room("alice", "Second")
      local res = B.call("alice", "PATCH", "/api/rooms/" .. room.id, { json = {} })
      assert.are.equal(422, res.status)
      assert.are.same({ error = "validation failed", status = 422,
                        fields = { ["$"] = "nothing to change (give title and/or description)" } }, res:json())
      res = B.call("alice", "PATCH", "/api/rooms/" .. room.id, { json = { title = "" } })
      assert.are.same({ error = "validation failed", status = 422, fields = { title = "must be 1..100 characters" } }, res:json())
      res = B.call("alice", "PATCH", "/api/rooms/" .. room.id, { json = { title = "second" } })
      assert.are.equal(409, res.status)
    end)

    it("answers 404 for a missing room", function()
      assert.are.equal(404, B.call("alice", "PATCH", "/api/rooms/999999999", { json = { title = "x" } }).status)
    end)
  end)

  describe("DELETE /api/rooms/:id", function()
    it("deletes the room with its posts", function()
      local room = B.room("alice", "Temp")
      local post = B.post("bob", room.id, "bye")
      local res = B.call("alice", "DELETE", "/api/rooms/" .. room.id)
      assert.are.equal(204, res.status)
      assert.are.equal("", res.body)
      assert.are.equal(404, request("GET", "/api/rooms/" .. room.id).status)
      assert.are.equal(404, request("GET", "/api/posts/" .. post.id).status)
      assert.are.equal(404, B.call("alice", "DELETE", "/api/rooms/" .. room.id).status)
    end)

    it("lets only the creator delete it", function()
      local room = B.room("alice", "Keep")
      assert.are.equal(403, B.call("bob", "DELETE", "/api/rooms/" .. room.id).status)
      assert.are.equal(401, request("DELETE", "/api/rooms/" .. room.id).status)
      assert.are.equal(200, request("GET", "/api/rooms/" .. room.id).status)
    end)
  end)

  describe("GET /api/rooms (pagination)", function()
    it("returns an empty list as a JSON array", function()
      local res = request("GET", "/api/rooms")
      assert.are.equal(200, res.status)
      assert.matches('"items":%[%]', res.body)
      assert.are.equal(app.null, res:json().next_cursor)
    end)

    it("walks every room once with ?limit=&cursor=, oldest first", function()
      local made = {}
      for i = 1, 5 do made[i] = B.room("alice", "room " .. i).id end
      local seen, cursor, pages = {}, nil, 0
      repeat
        local res = request("GET", "/api/rooms", { query = { limit = 2, cursor = cursor } })
        assert.are.equal(200, res.status)
        local page = res:json()
        assert.are.equal(2, page.limit)
        assert.is_true(#page.items <= 2)
        for _, r in ipairs(page.items) do seen[#seen + 1] = r.id end
        cursor = page.next_cursor ~= app.null and page.next_cursor or nil
        pages = pages + 1
      until not cursor
      assert.are.same(made, seen)
      assert.are.equal(3, pages)
    end)

    it("numbers pages with ?page= and reports the total", function()
      for i = 1, 5 do B.room("alice", "r" .. i) end
      local p2 = request("GET", "/api/rooms", { query = { page = 2, limit = 2 } }):json()
      assert.are.equal(2, p2.page)
      assert.are.equal(5, p2.total)
      assert.are.equal(3, p2.pages)
      assert.are.same({ "r3", "r4" }, { p2.items[1].title, p2.items[2].title })
      local p3 = request("GET", "/api/rooms", { query = { page = 3, limit = 2 } }):json()
      assert.are.equal(1, #p3.items)
      assert.are.equal(app.null, p3.next_cursor)
      local p9 = request("GET", "/api/rooms", { query = { page = 9, limit = 2 } })
      assert.are.equal(200, p9.status)
      assert.matches('"items":%[%]', p9.body)
    end)

    it("uses 20 as the default page size", function()
      for i = 1, 21 do B.room("alice", "n" .. i) end
      local page = request("GET", "/api/rooms"):json()
      assert.are.equal(20, #page.items)
      assert.are.equal(20, page.limit)
      assert.is_string(page.next_cursor)
    end)

    it("rejects bad paging parameters", function()
      local cases = {
        { { limit = 0 }, "limit: must be an integer 1..100" },
        { { limit = 101 }, "limit: must be an integer 1..100" },
        { { limit = "ten" }, "limit: must be an integer 1..100" },
        { { cursor = "abc" }, "cursor: must be the next_cursor of a previous page" },
        { { page = 0 }, "page: must be an integer 1..100000" },
        { { page = 1, cursor = 5 }, "cursor, page: give one or the other" },
      }
      for _, c in ipairs(cases) do
        local res = request("GET", "/api/rooms", { query = c[1] })
        assert.are.equal(400, res.status, c[2])
        assert.are.same({ error = c[2] }, res:json())
      end
    end)
  end)
end)
