-- PostgreSQL through handlers: types, parameters, affected rows, error tables, transactions,
-- fixtures, statement timeout. Needs DATABASE_URL. Runs with tests/features/db/config.lua.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

local function post(path, json) return request("POST", path, { json = json }) end
local function names() return request("GET", "/items"):json().names end

describe("db", function()
  local T = app.config.app.table     -- feat_items_<pid>, see config.lua
  setup(function()
    app.db.query("drop table if exists " .. T)
    app.db.query("create table " .. T .. " (id serial primary key, name text not null unique, meta jsonb)")
  end)
  teardown(function() app.db.query("drop table if exists " .. T) end)

  it("converts column types as documented", function()
    local res = request("GET", "/types")
    assert.are.equal(200, res.status, res.body)
    local r = res:json()
    assert.are.same({ i = "number", small_big = "number", big = "string", num = "number", big_num = "string",
                      t = "boolean", f = "boolean", n = "nil", jb = "table", j = "table", s = "string", d = "number" },
      r.types)
    local v = r.values
    assert.are.equal(1, v.i)
    assert.are.equal(42, v.small_big)
    assert.are.equal("9007199254740993", v.big, "bigint beyond 2^53 is the exact string")
    assert.are.equal(12.5, v.num)
    assert.are.equal("12345678901234567890.5", v.big_num)
    assert.is_true(v.t)
    assert.is_false(v.f)
    assert.is_nil(v.n, "NULL is an absent key")
    assert.are.equal(1.5, v.d)
    assert.are.equal("héllo", v.s)
    assert.are.same({ 1, "x" }, v.j)
    assert.are.same({ 1, 2 }, { v.jb.a[1], v.jb.a[2] })
    assert.is_true(r.jsonb_null_is_cjson_null)
  end)

  describe("writes (each test rolled back by db.fixture)", function()
    db.fixture()

    it("sends $1 parameters separately: an injection attempt is stored verbatim", function()
      local evil = "x'); drop table " .. T .. "; --"
      local res = post("/items", { name = evil, meta = { tags = { "a" }, n = 1 } })
      assert.are.equal(201, res.status, res.body)
      local item = res:json()
      assert.are.equal(evil, item.name)
      assert.are.same({ tags = { "a" }, n = 1 }, item.meta)
      assert.are.same({ evil }, names(), "the table is still there, with the row")
      local quotes = [[it's "quoted" \ back\slash $1 ; --]]
      assert.are.equal(quotes, post("/items", { name = quotes }):json().name)
    end)

    it("reports rows.affected for UPDATE and DELETE", function()
      for _, n in ipairs({ "a1", "a2", "b1" }) do assert.are.equal(201, post("/items", { name = n }).status) end
      local up = request("PUT", "/items/suffix", { json = { suffix = "-x", like = "a%" } }):json()
      assert.are.same({ affected = 2, rows = 0 }, up)
      assert.are.same({ "a1-x", "a2-x", "b1" }, names())
      assert.are.same({ affected = 3 }, request("DELETE", "/items"):json())
    end)

    it("raises an error table with sqlstate: a unique violation caught with pcall gives 409", function()
      assert.are.equal(201, post("/items", { name = "dup" }).status)
      local res = post("/items", { name = "dup" })
      assert.are.equal(409, res.status)
      assert.are.same({ error = "name taken", sqlstate = "23505", constraint = T .. "_name_key" }, res:json())
    end)

    it("a caught error inside db.fixture leaves the test's transaction usable", function()
        assert.are.equal(201, post("/items", { name = "dup" }).status)
        assert.are.equal(409, post("/items", { name = "dup" }).status)
        local res = request("GET", "/items")
        assert.are.equal(200, res.status, res.body)
        assert.are.same({ "dup" }, res:json().names)
      end)

    it("app.db.transaction commits", function()
      local res = request("POST", "/tx")
      assert.are.equal(201, res.status, res.body)
      assert.are.same({ "tx-a", "tx-b" }, names())
    end)

    it("app.db.transaction rolls back when the function raises, and re-raises", function()
      local res = request("POST", "/tx?fail=1")
      assert.are.equal(500, res.status)
      assert.matches("changed my mind", res:json().error, 1, true)
      assert.are.same({}, names())
      H.still_works("/ok")
    end)

    it("isolation 1/2: inserts a row", function()
      assert.are.equal(201, post("/items", { name = "only-in-test-1" }).status)
      assert.are.same({ "only-in-test-1" }, names())
    end)

    it("isolation 2/2: the row from the previous test is gone", function()
      assert.are.same({}, names())
    end)
  end)

  describe("without a fixture", function()
    after_each(function() request("DELETE", "/items") end)

    it("a caught error does not poison the request's later queries", function()
      local res = post("/items/twice", { name = "twice" })
      assert.are.equal(200, res.status, res.body)
      assert.are.same({ second_failed = true, sqlstate = "23505", count = 1 }, res:json())
    end)

    it("app.db.transaction really commits (visible to the next request) and really rolls back", function()
      assert.are.equal(500, request("POST", "/tx?fail=1").status)
      assert.are.same({}, names())
      assert.are.equal(201, request("POST", "/tx").status)
      assert.are.same({ "tx-a", "tx-b" }, names())
    end)

    it("nothing the fixture tests wrote survived", function()
      assert.are.same({}, names())
    end)

    it("an uncaught SQL error gives 500 with the message (development) and the next request works", function()
      local res = request("GET", "/syntax")
      assert.are.equal(500, res.status)
      assert.matches('42601: syntax error at or near "selec"', res:json().error, 1, true)
      H.still_works("/ok")
    end)

    it("numbers are sent as the number they are (0.1 stays 0.1)", function()
      local r = post("/numeric", { v = 12.25 }):json()
      assert.are.same({ t = "12.25", f = 12.25 }, r)
      assert.are.equal("3", post("/numeric", { v = 3 }):json().t)
    end)

    it("a fractional number parameter is sent in its shortest exact form", function()
        assert.are.equal("0.1", post("/numeric", { v = 0.1 }):json().t)
      end)
  end)

  describe("statement timeout (database.statement_timeout = 0.5)", function()
    it("cancels a slow statement with SQLSTATE 57014; the connection stays usable", function()
      local res = request("GET", "/slow")
      assert.are.equal(504, res.status)
      assert.are.same({ sqlstate = "57014", message = "canceling statement due to statement timeout" }, res:json())
      assert.are.equal(200, request("GET", "/types").status)
    end)

    it("uncaught, it is a 500 and the next request works", function()
      local res = request("GET", "/slow/uncaught")
      assert.are.equal(500, res.status)
      assert.matches("57014", res:json().error, 1, true)
      H.still_works("/ok")
    end)
  end)
end)
