-- migrate: `sluice migrate [--config config.lua] [--quiet] [dir]` applies dir/*.sql (default: the
-- migrations/ directory next to config.lua) in name order, each file in its own transaction,
-- recorded in schema_migrations. Safe to run twice, and from two instances at once.
local app = require "sluice"

-- Every migrating process takes this transaction-scoped advisory lock first, so concurrent
-- runs apply each file exactly once (the loser waits, then sees the file recorded).
local LOCK_KEY = 7310519   -- arbitrary, fixed: "sluice migrations"

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

local function list_sql(dir)
  local p = io.popen("ls -1 '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  if not p then return nil end
  local files = {}
  for name in p:lines() do
    if name:match("%.sql$") then files[#files + 1] = name end
  end
  p:close()
  table.sort(files)
  return files
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
      local lead = s:match("^[%s]*") or ""
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

local function errtext(e)
  if type(e) == "table" then
    local s = tostring(e.sqlstate and (e.sqlstate .. ": ") or "") .. tostring(e.message or e.code or "error")
    if e.detail then s = s .. " (" .. e.detail .. ")" end
    return s, e
  end
  return tostring(e), nil
end

return function(args)
  local quiet, dir = false, nil
  for _, a in ipairs(args or {}) do
    if a == "--quiet" or a == "-q" then quiet = true
    elseif a:sub(1, 1) == "-" then return fail("unknown option %s (usage: sluice migrate [--config config.lua] [--quiet] [dir])", a)
    elseif dir then return fail("only one migrations directory may be given (got %s and %s)", dir, a)
    else dir = a end
  end
  dir = dir or (base_dir() .. "/migrations")

  if not app.db.configured() then
    return fail("no database configured: set DATABASE_URL (e.g. postgresql://user:pass@127.0.0.1:5432/db)")
  end
  local files = list_sql(dir)
  if not files then return fail("cannot list %s", dir) end
  if #files == 0 then return fail("no *.sql files in %s", dir) end

  local ok, e = pcall(app.db.query, "select 1")
  if not ok then return fail("cannot reach the database: %s", (errtext(e))) end

  local applied, skipped = 0, 0
  for _, name in ipairs(files) do
    local path = dir .. "/" .. name
    local f, ferr = io.open(path, "rb")
    if not f then return fail("%s", ferr) end
    local text = f:read("*a")
    f:close()
    local stmts, serr, sline = split_sql(text)
    if not stmts then return fail("%s:%d: %s", path, sline, serr) end

    local current
    local tok, terr = pcall(app.db.transaction, function()
      app.db.query("select pg_advisory_xact_lock($1)", LOCK_KEY)
      app.db.query([[create table if not exists schema_migrations (
        version text primary key,
        applied_at timestamptz not null default now())]])
      if #app.db.query("select 1 from schema_migrations where version = $1", name) > 0 then
        return false
      end
      for _, st in ipairs(stmts) do
        current = st
        app.db.query(st.sql)
      end
      current = nil
      app.db.query("insert into schema_migrations (version) values ($1)", name)
      return true
    end)
    if not tok then
      local msg = errtext(terr)
      if current then
        return fail("%s:%d: %s\nnothing from %s was applied; fix it and run sluice migrate again", path, current.line, msg, name)
      end
      return fail("%s: %s", path, msg)
    end
    if terr then
      applied = applied + 1
      out(quiet, "applied  %s (%d statement%s)", name, #stmts, #stmts == 1 and "" or "s")
    else
      skipped = skipped + 1
    end
  end
  out(quiet, "migrations: %d applied, %d already up to date (%s)", applied, skipped, dir)
  return 0
end
