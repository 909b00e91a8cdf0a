local app = require "sluice"
local db = app.db
local T = app.config.app.table        -- feat_items_<pid> (config.lua)
local function sql(s) return (s:gsub("feat_items", T)) end

app.get("/ok", function(req) return "ok\n" end)

-- every column type the docs promise, reported as Lua type + value
app.get("/types", function(req)
  local r = db.query([[select 1::int as i, 42::bigint as small_big, 9007199254740993::bigint as big,
    12.50::numeric as num, 12345678901234567890.5::numeric as big_num, true as t, false as f,
    null::text as n, '{"a":[1,2,{"b":null}]}'::jsonb as jb, '[1,"x"]'::json as j, 'héllo'::text as s,
    1.5::float8 as d]])[1]
  local types = {}
  for k, v in pairs(r) do types[k] = type(v) end
  types.n = type(r.n)
  return { json = { types = types, values = r, jsonb_null_is_cjson_null = r.jb.a[3].b == app.null } }
end)

app.post("/items", function(req)
  local body = req:json()
  local ok, rows = pcall(db.query, sql("insert into feat_items (name, meta) values ($1, $2) returning id, name, meta"),
    body.name, body.meta)
  if not ok then
    if rows.sqlstate == "23505" then
      return { status = 409, json = { error = "name taken", sqlstate = rows.sqlstate, constraint = rows.constraint } }
    end
    error(rows)
  end
  return { status = 201, json = rows[1] }
end)

-- a caught error must not poison the rest of the request
app.post("/items/twice", function(req)
  local name = req:json().name
  db.query(sql("insert into feat_items (name) values ($1)"), name)
  local ok, err = pcall(db.query, sql("insert into feat_items (name) values ($1)"), name)
  local n = db.query(sql("select count(*)::int as n from feat_items where name = $1"), name)[1].n
  return { json = { second_failed = not ok, sqlstate = err and err.sqlstate, count = n } }
end)

app.get("/items", function(req)
  local rows = db.query(sql("select id, name from feat_items order by id"))
  local names = {}
  for i, r in ipairs(rows) do names[i] = r.name end
  return { json = { names = names, count = #rows } }
end)

app.put("/items/suffix", function(req)
  local rows = db.query(sql("update feat_items set name = name || $1 where name like $2"), req:json().suffix, req:json().like)
  return { json = { affected = rows.affected, rows = #rows } }
end)

app.delete("/items", function(req)
  return { json = { affected = db.query(sql("delete from feat_items")).affected } }
end)

app.post("/tx", function(req)
  local fail = req.query.fail == "1"
  local ok, err = pcall(db.transaction, function()
    db.query(sql("insert into feat_items (name) values ('tx-a')"))
    db.query(sql("insert into feat_items (name) values ('tx-b')"))
    if fail then error("changed my mind") end
  end)
  if not ok then return { status = 500, json = { error = tostring(err) } } end
  return { status = 201, json = { committed = true } }
end)

app.get("/slow", function(req)
  local ok, err = pcall(db.query, "select pg_sleep(3)")
  if ok then return { json = { slept = true } } end
  return { status = 504, json = { sqlstate = err.sqlstate, message = err.message } }
end)

app.get("/slow/uncaught", function(req) db.query("select pg_sleep(3)") end)

app.post("/numeric", function(req)
  local v = req:json().v
  local r = db.query("select $1::numeric::text as t, $1::float8 as f", v)[1]
  return { json = r }
end)

app.get("/syntax", function(req) db.query("selec 1") end)
