-- db_pool feature suite: one connection, 1 s pool_timeout, to show a waiting request's 503.
local url = os.getenv("DATABASE_URL")
if not url or url == "" then
  error("the db_pool feature suite needs DATABASE_URL, e.g. export DATABASE_URL=$(tools/pg-dev start /tmp/sluice-db 5433)", 0)
end
url = url:gsub("[?&]connection_limit=[^&]*", ""):gsub("[?&]pool_timeout=[^&]*", "")
return {
  scripts = { "app.lua" },
  ratelimit = false,
  database = { url = url .. (url:find("?", 1, true) and "&" or "?") .. "connection_limit=1&pool_timeout=1" },
}
