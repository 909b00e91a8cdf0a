-- auth_spec: POST /api/login, POST /api/logout, GET /api/me, and who a request is from
local B = require("tests.spec.board_helper").with(request)

-- the session cookie's value from a Set-Cookie header
local function session_of(res)
  return (res.headers["set-cookie"] or ""):match("board_session=(%x+)")
end

describe("auth", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  describe("POST /api/login", function()
    it("sets an HttpOnly session cookie", function()
      local res = request("POST", "/api/login", { json = { name = "dana" } })
      assert.are.equal(200, res.status)
      assert.are.same({ name = "dana" }, res:json())
      local c = res.headers["set-cookie"]
      assert.matches("^board_session=%x+; Path=/", c)
      assert.matches("HttpOnly", c, 1, true)
      assert.matches("SameSite=Lax", c, 1, true)
      assert.are.equal(32, #session_of(res))
    end)

    it("gives every login its own session", function()
      local a = session_of(request("POST", "/api/login", { json = { name = "dana" } }))
      local b = session_of(request("POST", "/api/login", { json = { name = "dana" } }))
      assert.are_not.equal(a, b)
    end)

    it("validates the name", function()
      local rule = "name: must be 1..32 characters: letters, digits, '_', '.' or '-'"
      local cases = {
        { {}, "name: is required" },
        { { name = "" }, rule },
        { { name = "two words" }, rule },
        { { name = string.rep("n", 33) }, rule },
        { { name = 7 }, rule },
        { { name = "x", password = "y" }, "password: unknown field (allowed: name)" },
      }
      for _, c in ipairs(cases) do
        local res = request("POST", "/api/login", { json = c[1] })
        assert.are.equal(422, res.status, c[2])
        assert.are.same({ error = c[2] }, res:json())
        assert.is_nil(res.headers["set-cookie"])
      end
    end)
  end)

  describe("GET /api/me", function()
    it("knows the user of a session cookie", function()
      local sid = session_of(request("POST", "/api/login", { json = { name = "erin" } }))
      local res = request("GET", "/api/me", { headers = { cookie = "board_session=" .. sid } })
      assert.are.equal(200, res.status)
      assert.are.same({ name = "erin" }, res:json())
    end)

    it("knows the user of an X-User header", function()
      assert.are.same({ name = "frank" }, request("GET", "/api/me", { headers = B.as("frank") }):json())
    end)

    it("answers 401 without a user or with an unknown session", function()
      assert.are.equal(401, request("GET", "/api/me").status)
      local res = request("GET", "/api/me", { headers = { cookie = "board_session=" .. string.rep("a", 32) } })
      assert.are.equal(401, res.status)
      assert.matches("^login required", res:json().error)
      assert.are.equal(401, request("GET", "/api/me", { headers = { cookie = "board_session=../../etc" } }).status)
    end)

    it("does not accept an expired session", function()
      local sid = session_of(request("POST", "/api/login", { json = { name = "gina" } }))
      app.db.query("update sessions set expires_at = now() - interval '1 second' where id = $1", sid)
      assert.are.equal(401, request("GET", "/api/me", { headers = { cookie = "board_session=" .. sid } }).status)
    end)
  end)

  describe("the session cookie on the API", function()
    it("identifies the author of writes", function()
      local sid = session_of(request("POST", "/api/login", { json = { name = "hana" } }))
      local res = request("POST", "/api/rooms", { headers = { cookie = "board_session=" .. sid }, json = { title = "Cookies" } })
      assert.are.equal(201, res.status)
      assert.are.equal("hana", res:json().created_by)
    end)
  end)

  describe("POST /api/logout", function()
    it("ends the session and expires the cookie", function()
      local sid = session_of(request("POST", "/api/login", { json = { name = "ivan" } }))
      local cookie = { cookie = "board_session=" .. sid }
      local res = request("POST", "/api/logout", { headers = cookie })
      assert.are.equal(204, res.status)
      assert.matches("^board_session=;.*Max%-Age=0", res.headers["set-cookie"])
      assert.are.equal(401, request("GET", "/api/me", { headers = cookie }).status)
    end)

    it("is harmless without a session", function()
      assert.are.equal(204, request("POST", "/api/logout").status)
    end)
  end)
end)
