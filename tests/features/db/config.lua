-- db feature suite: needs a PostgreSQL the tests may use (tables named feat_*).
local url = os.getenv("DATABASE_URL")
if not url or url == "" then
  error("the db feature suite needs DATABASE_URL, e.g. export DATABASE_URL=$(tools/pg-dev start /tmp/sluice-db 5433)", 0)
end
-- one table per process, so two runs against the same database do not collide
local ffi = require "ffi"
pcall(ffi.cdef, "int getpid(void);")
return {
  scripts = { "app.lua" },
  ratelimit = false,
  database = { url = url, statement_timeout = 0.5 },
  app = { table = "feat_items_" .. ffi.C.getpid() },
}
