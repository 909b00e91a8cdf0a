-- migrate: what `sluice migrate` runs (the handler scripts are not loaded, only config.lua).
--
--   sluice migrate [--config config.lua] [--quiet] [dir]   apply the pending dir/*.sql in name order
--   sluice migrate status [dir]                            list applied, pending and changed files
--   sluice migrate new NAME [dir]                          create dir/NNN_name.sql, the next number
--
-- dir defaults to the migrations/ directory next to config.lua. Each file runs in its own
-- transaction, unless it has a line `-- sluice:no-transaction` (for CREATE INDEX CONCURRENTLY
-- and other statements PostgreSQL refuses inside a transaction); then its statements run one by
-- one. Applied files are recorded in schema_migrations with an md5 of their text: an applied file
-- that was edited afterwards is refused by name. One run at a time per database, however many
-- instances start at once (an advisory lock, see take_lock).

-- Every migrating process takes this advisory lock first, so concurrent runs apply each file
-- exactly once (the others wait, then find it recorded).
local LOCK_KEY = 7310519   -- arbitrary, fixed: "sluice migrations"
local NO_TX = "^%s*%-%-%s*sluice:no%-transaction%s*$"

local function out(quiet, fmt, ...)
  if not quiet then io.stdout:write(string.format(fmt, ...), "\n"); io.stdout:flush() end
end

local function fail(fmt, ...)
  io.stderr:write("sluice migrate: ", string.format(fmt, ...), "\n")
  io.stderr:flush()
  return 1
end

-- The directory of config.lua: the runtime puts "<base>/?.lua;<base>/scripts/?.lua" on
-- package.path (first, unless `sluice test --lpath` prepended more).
local function base_dir()
  return package.path:match("^([^;]*)/%?%.lua;%1/scripts/%?%.lua")
    or package.path:match(";([^;]*)/%?%.lua;%1/scripts/%?%.lua") or "."
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function list_sql(dir)
  local p = io.popen("ls -1 " .. shq(dir) .. " 2>/dev/null")
  if not p then return nil end
  local files = {}
  for name in p:lines() do
    if name:match("%.sql$") then files[#files + 1] = name end
  end
  p:close()
  table.sort(files)
  return files
end

local function is_dir(dir)
  return os.execute("test -d " .. shq(dir)) == 0
end

-- Split a SQL file into statements: app.db.query sends one statement per call (extended
-- protocol). Semicolons inside quotes, dollar quotes and comments do not split. Returns
-- { { sql =, line = } ... } with the line each statement starts on.
local function split_sql(text)
  local stmts, i, n, start, line, start_line = {}, 1, #text, 1, 1, 1
  local function push(upto)
    local s = text:sub(start, upto)
    if s:gsub("%-%-[^\n]*", ""):gsub("/%*.-%*/", ""):match("%S") then
      -- the statement begins at its first non-blank, non-comment line
      local lead, k = "", 1
      while true do
        local ws = s:match("^%s*", k)
        k = k + #ws
        lead = lead .. ws
        local c = s:match("^%-%-[^\n]*", k) or s:match("^/%*.-%*/", k)
        if not c then break end
        lead = lead .. c
        k = k + #c
      end
      local _, nl = lead:gsub("\n", "")
      stmts[#stmts + 1] = { sql = s:match("^%s*(.-)%s*$"), line = start_line + nl }
    end
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == "\n" then
      line = line + 1
      i = i + 1
    elseif c == "-" and text:sub(i + 1, i + 1) == "-" then
      local e = text:find("\n", i, true) or n + 1
      i = e
    elseif c == "/" and text:sub(i + 1, i + 1) == "*" then
      local e = text:find("*/", i + 2, true)
      if not e then return nil, "unterminated /* comment", line end
      local _, nl = text:sub(i, e):gsub("\n", "")
      line = line + nl
      i = e + 2
    elseif c == "'" or c == '"' then
      local j = i + 1
      while true do
        local e = text:find(c, j, true)
        if not e then return nil, "unterminated " .. c .. " quote", line end
        if text:sub(e + 1, e + 1) == c then j = e + 2 else j = e; break end
      end
      local _, nl = text:sub(i, j):gsub("\n", "")
      line = line + nl
      i = j + 1
    elseif c == "$" and text:match("^%$[%a_]*[%w_]*%$", i) then
      local tag = text:match("^%$[%a_]*[%w_]*%$", i)
      local e = text:find(tag, i + #tag, true)
      if not e then return nil, "unterminated dollar quote " .. tag, line end
      local _, nl = text:sub(i, e):gsub("\n", "")
      line = line + nl
      i = e + #tag
    elseif c == ";" then
      push(i - 1)
      start, start_line = i + 1, line
      i = i + 1
    else
      i = i + 1
    end
  end
  push(n)
  return stmts
end

local function no_transaction(text)
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    if l:match(NO_TX) then return true end
  end
  return false
end

local function errtext(e)
  if type(e) == "table" then
    local s = tostring(e.sqlstate and (e.sqlstate .. ": ") or "") .. tostring(e.message or e.code or "error")
    if e.detail then s = s .. " (" .. e.detail .. ")" end
    return s, e
  end
  return tostring(e), nil
end

local function read_file(path)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, ferr end
  local text = f:read("*a")
  f:close()
  return text
end

---------------------------------------------------------------------------------------------
-- sluice migrate new NAME: no database needed
---------------------------------------------------------------------------------------------

local function new_file(dir, name)
  if not name or name == "" then
    return fail("usage: sluice migrate new NAME [dir]  (e.g. sluice migrate new add_users)")
  end
  local slug = name:lower():gsub("[^%w]+", "_"):gsub("^_+", ""):gsub("_+$", "")
  if slug == "" then return fail("%q: a migration name needs letters or digits (e.g. add_users)", name) end
  if not is_dir(dir) and os.execute("mkdir -p " .. shq(dir)) ~= 0 then return fail("cannot create %s", dir) end
  local files = list_sql(dir) or {}
  local top, width = 0, 3
  for _, f in ipairs(files) do
    local digits = f:match("^(%d+)")
    if digits then
      top = math.max(top, tonumber(digits))
      width = math.max(width, #digits)
    end
  end
  local file = string.format("%0" .. width .. "d_%s.sql", top + 1, slug)
  local path = dir .. "/" .. file
  if read_file(path) then return fail("%s already exists", path) end
  local f, ferr = io.open(path, "wb")
  if not f then return fail("%s", ferr) end
  f:write("-- ", file, ": ", name, "\n",
          "-- Applied once by `sluice migrate`, in a transaction of its own: if a statement fails,\n",
          "-- nothing of this file is applied. Never edit it once applied: add a new file instead.\n",
          "-- For statements PostgreSQL refuses in a transaction (CREATE INDEX CONCURRENTLY), put\n",
          "-- `-- sluice:no-transaction` on a line of its own and make each statement safe to run twice.\n\n")
  f:close()
  io.stdout:write("created ", path, "\n")
  return 0
end

---------------------------------------------------------------------------------------------
-- the lock: held by a task of its own for the whole run
---------------------------------------------------------------------------------------------

-- A transaction-scoped advisory lock, held by a second task in an open transaction while the
-- main task migrates on other connections; that way no-transaction files run under it too, and
-- it works behind PgBouncer in transaction mode. A waiting instance polls with
-- pg_try_advisory_xact_lock instead of blocking: a blocked lock request keeps a snapshot open,
-- which CREATE INDEX CONCURRENTLY in the running instance would wait for (a deadlock no server
-- could detect: it goes through the client).
local function take_lock(app, quiet)
  local st = { locked = false, finished = false }
  app.timer(0, function()
    local said = false
    while true do
      local got = false
      local ok, err = pcall(app.db.transaction, function()
        local r = app.db.query("select pg_try_advisory_xact_lock($1) as ok, pg_backend_pid() as pid", LOCK_KEY)[1]
        got = r.ok
        if not got then return end
        st.pid = r.pid
        -- The SELECT's portal (and its snapshot) would stay open until the next statement, and
        -- CREATE INDEX CONCURRENTLY waits for every older snapshot: replace it by one that takes none.
        app.db.query("set local application_name = 'sluice migrate (lock)'")
        st.locked = true
        while not st.done do app.sleep(0.02) end
      end)
      if not ok then st.err = errtext(err); break end
      if got or st.done then break end
      if not said then
        out(quiet, "waiting for another sluice migrate on this database to finish ...")
        said = true
      end
      app.sleep(0.2)
    end
    st.finished = true
  end)
  while not st.locked and not st.finished do app.sleep(0.01) end
  return st
end

local function release(app, st)
  st.done = true
  while not st.finished do app.sleep(0.01) end
end

-- Still ours? The holder's connection may have died (server restart, idle timeout).
local function still_locked(app, st)
  local rows = app.db.query([[select 1 from pg_locks where locktype = 'advisory' and granted
    and pid = $1 and objid = $2 and classid = 0]], st.pid, LOCK_KEY)
  return #rows > 0
end

---------------------------------------------------------------------------------------------
-- status and apply
---------------------------------------------------------------------------------------------

-- Reads every file: { name, path, text, stmts, no_tx, sum } or nil, message.
local function load_files(app, dir, files)
  local list = {}
  for _, name in ipairs(files) do
    local path = dir .. "/" .. name
    local text, ferr = read_file(path)
    if not text then return nil, ferr end
    local stmts, serr, sline = split_sql(text)
    if not stmts then return nil, string.format("%s:%d: %s", path, sline, serr) end
    list[#list + 1] = { name = name, path = path, text = text, stmts = stmts, no_tx = no_transaction(text),
                        sum = app.db.query("select md5($1) as sum", text)[1].sum }
  end
  return list
end

-- { [version] = { checksum =, applied_at = } }, empty when the table does not exist yet.
local function applied_rows(app)
  if app.db.query("select to_regclass('schema_migrations') is not null as ok")[1].ok == false then return {}, {} end
  local cols = app.db.query([[select 1 from information_schema.columns where table_name = 'schema_migrations'
    and column_name = 'checksum' and table_schema = current_schema()]])
  local rows = app.db.query("select version, " .. (#cols > 0 and "checksum" or "null::text as checksum")
                            .. ", to_char(applied_at, 'YYYY-MM-DD HH24:MI:SS') as at from schema_migrations order by version")
  local by, order = {}, {}
  for _, r in ipairs(rows) do
    by[r.version] = r
    order[#order + 1] = r.version
  end
  return by, order
end

local function changed_msg(f, row)
  return string.format("%s was changed after it was applied on %s (checksum %s, now %s): restore it "
                       .. "(e.g. git checkout -- %s) and put the change in a new file (sluice migrate new NAME)",
                       f.path, row.at or "?", row.checksum, f.sum, f.path)
end

local function status(app, dir, files)
  local list, lerr = load_files(app, dir, files)
  if not list then return fail("%s", lerr) end
  local rows, order = applied_rows(app)
  local here, changed, pending, applied = {}, 0, 0, 0
  for _, f in ipairs(list) do
    here[f.name] = true
    local r = rows[f.name]
    local mode = f.no_tx and "  (no transaction)" or ""
    if not r then
      pending = pending + 1
      io.stdout:write(string.format("pending  %s%s\n", f.name, mode))
    elseif r.checksum and r.checksum ~= f.sum then
      changed = changed + 1
      io.stdout:write(string.format("CHANGED  %s  applied %s, edited since: restore it and add a new file\n", f.name, r.at))
    else
      applied = applied + 1
      io.stdout:write(string.format("applied  %s  %s\n", f.name, r.at))
    end
  end
  for _, v in ipairs(order) do
    if not here[v] then io.stdout:write(string.format("missing  %s  applied %s, no such file in %s\n", v, rows[v].at, dir)) end
  end
  io.stdout:write(string.format("migrations: %d applied, %d pending%s (%s)\n", applied, pending,
                                changed > 0 and (", " .. changed .. " changed since applied") or "", dir))
  io.stdout:flush()
  return changed > 0 and 1 or 0
end

-- Applies one file; returns true, or nil and the message for fail().
local function apply(app, f)
  local current
  if f.no_tx then
    -- statement by statement, each committed on its own; recorded when all have run
    for _, st in ipairs(f.stmts) do
      current = st
      local ok, e = pcall(app.db.query, st.sql)
      if not ok then
        local msg, et = errtext(e)
        local hint = (et and et.sqlstate ~= "42P07" and st.sql:lower():match("concurrently"))
          and " A CREATE INDEX CONCURRENTLY that fails leaves an INVALID index behind: drop it (DROP INDEX IF EXISTS) first." or ""
        return nil, string.format("%s:%d: %s\n%s runs without a transaction (sluice:no-transaction): the statements "
                                  .. "before line %d stay applied. Make them safe to run twice (IF NOT EXISTS) and run "
                                  .. "sluice migrate again.%s", f.path, st.line, msg, f.name, st.line, hint)
      end
    end
    app.db.query("insert into schema_migrations (version, checksum) values ($1, $2)", f.name, f.sum)
    return true
  end
  local ok, e = pcall(app.db.transaction, function()
    for _, st in ipairs(f.stmts) do
      current = st
      app.db.query(st.sql)
    end
    current = nil
    app.db.query("insert into schema_migrations (version, checksum) values ($1, $2)", f.name, f.sum)
  end)
  if ok then return true end
  local msg, et = errtext(e)
  if current then
    local hint = ""
    if et and et.sqlstate == "25001" then
      hint = "\nthis statement cannot run in a transaction: put `-- sluice:no-transaction` on a line of its own in "
             .. f.name .. " (docs/database.md, \"Migrations\")"
    end
    return nil, string.format("%s:%d: %s\nnothing from %s was applied; fix it and run sluice migrate again%s",
                              f.path, current.line, msg, f.name, hint)
  end
  return nil, string.format("%s: %s", f.path, msg)
end

local function up(app, dir, files, quiet)
  local list, lerr = load_files(app, dir, files)
  if not list then return fail("%s", lerr) end
  local lock = take_lock(app, quiet)
  if not lock.locked then return fail("cannot take the migration lock: %s", lock.err or "?") end
  local okc, rc = pcall(function()
    app.db.query([[create table if not exists schema_migrations (
      version text primary key,
      applied_at timestamptz not null default now())]])
    app.db.query("alter table schema_migrations add column if not exists checksum text")
    local rows = applied_rows(app)
    -- every applied file must be what was applied, before anything new runs
    for _, f in ipairs(list) do
      local r = rows[f.name]
      if r and r.checksum and r.checksum ~= f.sum then return fail("%s", changed_msg(f, r)) end
    end
    for _, f in ipairs(list) do          -- applied before checksums existed: trust them as they are now
      local r = rows[f.name]
      if r and not r.checksum then
        app.db.query("update schema_migrations set checksum = $2 where version = $1", f.name, f.sum)
      end
    end
    local applied, skipped = 0, 0
    for _, f in ipairs(list) do
      if rows[f.name] then
        skipped = skipped + 1
      else
        if not still_locked(app, lock) then
          return fail("lost the migration lock (its database connection closed); nothing more was applied: run sluice migrate again")
        end
        local ok, err = apply(app, f)
        if not ok then return fail("%s", err) end
        applied = applied + 1
        out(quiet, "applied  %s (%d statement%s%s)", f.name, #f.stmts, #f.stmts == 1 and "" or "s",
            f.no_tx and ", no transaction" or "")
      end
    end
    out(quiet, "migrations: %d applied, %d already up to date (%s)", applied, skipped, dir)
    return 0
  end)
  release(app, lock)           -- also after an error: the holder must finish its transaction
  if not okc then return fail("%s", (errtext(rc))) end
  return rc
end

return function(args)
  local quiet, dir, sub, name = false, nil, "up", nil
  local rest = {}
  for _, a in ipairs(args or {}) do
    if a == "--quiet" or a == "-q" then quiet = true
    elseif a:sub(1, 1) == "-" then
      return fail("unknown option %s (usage: sluice migrate [--config config.lua] [--quiet] [status | new NAME] [dir])", a)
    else rest[#rest + 1] = a end
  end
  if rest[1] == "status" or rest[1] == "new" then sub = table.remove(rest, 1) end
  if sub == "new" then name = table.remove(rest, 1) end
  if #rest > 1 then return fail("only one migrations directory may be given (got %s and %s)", rest[1], rest[2]) end
  dir = rest[1] or (base_dir() .. "/migrations")

  if sub == "new" then return new_file(dir, name) end

  local app = require "sluice"
  if not app.db.configured() then
    return fail("no database configured: set DATABASE_URL (e.g. postgresql://user:pass@127.0.0.1:5432/db)")
  end
  local files = list_sql(dir)
  if not files or (#files == 0 and not is_dir(dir)) then
    return fail("%s does not exist (create it, or run sluice migrate new NAME)", dir)
  end
  if #files == 0 and sub == "up" then return fail("no *.sql files in %s (sluice migrate new NAME creates one)", dir) end

  local ok, e = pcall(app.db.query, "select 1")
  if not ok then return fail("cannot reach the database: %s", (errtext(e))) end
  if sub == "status" then return status(app, dir, files) end
  local pool = app.config.database and app.config.database.url and require("sluice.pgurl").check(app.config.database.url)
  if pool and pool.connection_limit < 2 then
    return fail("needs connection_limit of at least 2 in the database URL (one connection holds the migration lock; it is %d)",
                pool.connection_limit)
  end
  return up(app, dir, files, quiet)
end
