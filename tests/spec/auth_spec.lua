-- auth_spec: accounts (POST /api/signup, /api/login with Argon2id passwords), sessions, bearer
-- tokens, GET /api/me, POST /api/logout, and who a request is from
local B = require("tests.spec.board_helper").with(request)
local auth = require "board_auth"

-- the session cookie's value (id.signature) from a Set-Cookie header
local function session_of(res)
  return (res.headers["set-cookie"] or ""):match("board_session=([%w._-]+)")
end

local function signup(name, password)
  return request("POST", "/api/signup", { json = { name = name, password = password or "correct horse" } })
end

local function login(name, password)
  return request("POST", "/api/login", { json = { name = name, password = password or "correct horse" } })
end

local function fields_of(res)
  assert.are.equal(422, res.status, res.body)
  local j = res:json()
  assert.are.equal("validation failed", j.error)
  return j.fields
end

describe("auth", function()
  setup(B.schema)
  db.fixture()
  before_each(B.fresh)

  describe("POST /api/signup", function()
    it("creates an account with an Argon2id hash, a session cookie and a token", function()
      local res = signup("dana")
      assert.are.equal(201, res.status, res.body)
      local j = res:json()
      assert.are.equal("dana", j.name)
      assert.are.equal(3600, j.expires_in)
      local c = res.headers["set-cookie"]
      assert.matches("^board_session=%x+%.[%w_-]+; Path=/", c)
      assert.matches("HttpOnly", c, 1, true)
      assert.matches("SameSite=Lax", c, 1, true)
      local row = app.db.query("select password_hash from users where name = 'dana'")[1]
      assert.matches("^%$argon2id%$v=19%$m=19456,t=2,p=1%$", row.password_hash)
      assert.is_true(app.password.verify("correct horse", row.password_hash))
      -- the token names the user
      assert.are.same({ name = "dana" }, request("GET", "/api/me", { headers = { authorization = "Bearer " .. j.token } }):json())
    end)

    it("refuses a name that is taken", function()
      assert.are.equal(201, signup("erin").status)
      local res = signup("erin", "another password")
      assert.are.equal(409, res.status)
      assert.are.same({ error = "name: already taken" }, res:json())
    end)

    it("validates every field at once", function()
      local rule = "must be 1..32 characters: letters, digits, '_', '.' or '-'"
      assert.are.same({ name = "is required", password = "is required" },
        fields_of(request("POST", "/api/signup", { json = {} })))
      assert.are.same({ name = rule, password = "must be 8..256 characters" },
        fields_of(request("POST", "/api/signup", { json = { name = "two words", password = "short" } })))
      assert.are.same({ name = rule }, fields_of(signup(string.rep("n", 33))))
      assert.are.same({ name = rule }, fields_of(signup(7)))
      assert.are.same({ extra = "unknown field" },
        fields_of(request("POST", "/api/signup", { json = { name = "x", password = "long enough", extra = 1 } })))
      assert.is_nil(app.db.query("select 1 from users where name in ('x', 'two words', $1)", string.rep("n", 33))[1],
        "nothing was created")
    end)
  end)

  describe("POST /api/login", function()
    it("checks the password and starts a new session each time", function()
      B.account("fay", "secret pass")
      local a = login("fay", "secret pass")
      assert.are.equal(200, a.status, a.body)
      assert.are.equal("fay", a:json().name)
      assert.is_string(a:json().token)
      local b = login("fay", "secret pass")
      assert.are_not.equal(session_of(a), session_of(b))
    end)

    it("answers the same 401 for a wrong password and an unknown name", function()
      B.account("gus", "secret pass")
      for _, res in ipairs({ login("gus", "Secret pass"), login("nobody", "secret pass") }) do
        assert.are.equal(401, res.status)
        assert.are.same({ error = "wrong name or password" }, res:json())
        assert.is_nil(res.headers["set-cookie"])
      end
    end)

    it("rehashes a password made with other parameters", function()
      local old = "$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHRzYWx0$5YHT8ZDhBeqdbLaIKKPWaHOVfqCkLDnJo/WC5yMJsmg"   -- argon2 CLI
      app.db.query("insert into users (name, password_hash) values ('hal', $1)", old)
      assert.are.equal(200, login("hal", "correct horse").status)
      local now = app.db.query("select password_hash from users where name = 'hal'")[1].password_hash
      assert.are_not.equal(old, now)
      assert.matches("^%$argon2id%$v=19%$m=19456,t=2,p=1%$", now)
      assert.are.equal(200, login("hal", "correct horse").status)
    end)

    it("validates the body", function()
      assert.are.same({ password = "is required" }, fields_of(request("POST", "/api/login", { json = { name = "x" } })))
      assert.are.equal(415, request("POST", "/api/login", { body = "name=x", headers = { ["content-type"] = "text/plain" } }).status)
    end)
  end)

  describe("GET /api/me", function()
    it("knows the user of a session cookie", function()
      local sid = session_of(signup("ivy"))
      local res = request("GET", "/api/me", { headers = { cookie = "board_session=" .. sid } })
      assert.are.equal(200, res.status)
      assert.are.same({ name = "ivy" }, res:json())
    end)

    it("knows the user of a bearer token and refuses a bad one", function()
      assert.are.same({ name = "jo" }, request("GET", "/api/me", { headers = B.as("jo") }):json())
      local tok = auth.token_for("jo")
      local bad = request("GET", "/api/me", { headers = { authorization = "Bearer " .. tok:sub(1, -6) .. "AAAAA" } })
      assert.are.equal(401, bad.status)
      assert.are.same({ error = "token: bad signature" }, bad:json())
      local other = app.jwt.sign({ sub = "jo", aud = "board" }, "some-other-key-of-thirty-two-bytes!!")
      assert.are.same({ error = "token: bad signature" },
        request("GET", "/api/me", { headers = { authorization = "Bearer " .. other } }):json())
      local expired = app.jwt.sign({ sub = "jo", aud = "board", exp = os.time() - 120 }, app.config.session.keys[1])
      assert.are.same({ error = "token: expired" },
        request("GET", "/api/me", { headers = { authorization = "Bearer " .. expired } }):json())
      assert.are.same({ error = "authorization: expected Bearer <token>" },
        request("GET", "/api/me", { headers = { authorization = "Basic am86eA==" } }):json())
    end)

    it("ignores X-User unless config.lua trusts it", function()
      local res = request("GET", "/api/me", { headers = { ["x-user"] = "frank" } })
      assert.are.equal(401, res.status)
    end)

    it("answers 401 without a user or with an unknown, forged or unsigned session", function()
      assert.are.equal(401, request("GET", "/api/me").status)
      local sid = session_of(signup("kim"))
      local bare = sid:match("^(%x+)%.")
      for _, c in ipairs({ string.rep("a", 32), bare, bare .. ".AAAA", "../../etc", string.rep("b", 32) .. sid:match("%..*$") }) do
        local res = request("GET", "/api/me", { headers = { cookie = "board_session=" .. c } })
        assert.are.equal(401, res.status, c)
        assert.matches("^login required", res:json().error)
      end
    end)

    it("does not accept an expired session", function()
      local sid = session_of(signup("lee"))
      app.db.query("update sessions set expires_at = now() - interval '1 second' where id = $1", sid:match("^(%x+)"))
      assert.are.equal(401, request("GET", "/api/me", { headers = { cookie = "board_session=" .. sid } }).status)
    end)
  end)

  describe("the session cookie on the API", function()
    it("identifies the author of writes", function()
      local sid = session_of(signup("hana"))
      local res = request("POST", "/api/rooms", { headers = { cookie = "board_session=" .. sid }, json = { title = "Cookies" } })
      assert.are.equal(201, res.status)
      assert.are.equal("hana", res:json().created_by)
    end)
  end)

  describe("POST /api/logout", function()
    it("ends the session and expires the cookie", function()
      local sid = session_of(signup("ivan"))
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
