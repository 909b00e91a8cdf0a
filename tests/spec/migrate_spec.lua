-- migrate_spec: lua/migrate.lua, what `sluice migrate` runs. Each test works in a temporary
-- directory of *.sql files and inside the fixture transaction, so nothing it creates stays.
local B = require("tests.spec.board_helper").with(request)
local migrate = require "migrate"

local function tmpdir(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'") == 0 or true)
  for name, text in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(text)
    f:close()
  end
  return dir
end

-- runs migrate(args) with io.stderr captured: returns the exit code and what it printed
local function run(args)
  local real, buf = io.stderr, {}
  io.stderr = { write = function(self, ...) for _, x in ipairs({ ... }) do buf[#buf + 1] = x end return self end,
                flush = function() end }
  local ok, rc = pcall(migrate, args)
  io.stderr = real
  if not ok then error(rc, 0) end
  return rc, table.concat(buf)
end

local function rmdir(dir) os.execute("rm -rf '" .. dir .. "'") end

local function versions(prefix)
  local out = {}
  for _, r in ipairs(app.db.query("select version from schema_migrations where version like $1 order by version", prefix .. "%")) do
    out[#out + 1] = r.version
  end
  return out
end

describe("sluice migrate", function()
  setup(B.schema)
  db.fixture()

  it("has applied the board's migrations", function()
    local got = versions("00")
    assert.is_true(#got >= 2)
    assert.are.equal("001_init.sql", got[1])
    assert.are.equal("002_sessions.sql", got[2])
    assert.are.equal(0, migrate({ "--quiet" }))               -- and running it again changes nothing
  end)

  it("applies files in name order, once", function()
    local dir = tmpdir({
      ["zz_002_more.sql"] = "insert into mig_spec_t (v) values ('second');",
      ["zz_001_first.sql"] = [[
        -- a comment; with a semicolon
        create table mig_spec_t (v text);
        /* block; comment */
        insert into mig_spec_t (v) values ('it''s; fine');
        create function mig_spec_f() returns int language sql as $$ select 1; $$;
      ]],
    })
    finally(function() rmdir(dir) end)
    assert.are.equal(0, migrate({ "--quiet", dir }))
    assert.are.same({ "zz_001_first.sql", "zz_002_more.sql" }, versions("zz_"))
    local rows = app.db.query("select v from mig_spec_t order by v")
    assert.are.same({ { v = "it's; fine" }, { v = "second" } }, rows)
    assert.are.equal(1, app.db.query("select mig_spec_f() as n")[1].n)
    assert.are.equal(0, migrate({ "--quiet", dir }))
    assert.are.equal(2, #app.db.query("select v from mig_spec_t"))   -- not applied twice
  end)

  it("stops at a failing file and applies nothing of it", function()
    local dir = tmpdir({
      ["zz_001_ok.sql"] = "create table mig_spec_ok (v int);",
      ["zz_002_bad.sql"] = "create table mig_spec_bad (v int);\nselect * from no_such_table;",
      ["zz_003_later.sql"] = "create table mig_spec_later (v int);",
    })
    finally(function() rmdir(dir) end)
    local rc, err = run({ "--quiet", dir })
    assert.are.equal(1, rc)
    assert.matches("zz_002_bad.sql:2: 42P01: relation \"no_such_table\" does not exist", err, 1, true)
    assert.matches("nothing from zz_002_bad.sql was applied", err, 1, true)
    assert.are.same({ "zz_001_ok.sql" }, versions("zz_"))
    assert.are.equal(0, #app.db.query("select 1 from pg_tables where tablename in ('mig_spec_bad', 'mig_spec_later')"))
  end)

  it("fails clearly on a directory without migrations and on bad arguments", function()
    local dir = tmpdir({})
    finally(function() rmdir(dir) end)
    local rc, err = run({ "--quiet", dir })
    assert.are.equal(1, rc)
    assert.matches("^sluice migrate: no %*%.sql files in ", err)
    rc, err = run({ "--bogus" })
    assert.are.equal(1, rc)
    assert.matches("unknown option --bogus", err, 1, true)
    rc, err = run({ "a", "b" })
    assert.are.equal(1, rc)
    assert.matches("only one migrations directory", err, 1, true)
  end)
end)
