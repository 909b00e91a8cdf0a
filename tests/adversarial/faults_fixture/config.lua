-- Fixture for tests/adversarial/faults.py: one app run as two instances sharing PostgreSQL and
-- Redis. Short timeouts so every fault shows within seconds; the rest are the defaults
-- (limits.max_connections 11,000, lua_memory 512 MB, the fail-open limiter).
return {
  port = 5000,                          -- PORT (set by the harness) overrides
  host = "127.0.0.1",
  workers = 2,
  env = "development",
  scripts = { "app.lua" },
  log = { access = "off", level = "info" },
  ratelimit = {
    -- counted in Redis; a limit no test reaches, so a 429 or 503 here would be the fault's doing
    lim = { limit = 100000000, window = 60, key = "ip", paths = { "/limited" } },
  },
  limits = {
    header_timeout = 2,                 -- slowloris: 408 after 2 s
    request_timeout = 4,                -- slow bodies 408, a handler that never answers 503
    keepalive_timeout = 120,            -- the load's connections stay open across the cases
    script_timeout = 1,                 -- a busy loop holds its worker for about 1 s
  },
  database = { url = os.getenv("DATABASE_URL") },   -- connection_limit, pool_timeout, statement_timeout in the URL
  redis = { url = os.getenv("REDIS_URL") },
  sse = { heartbeat = 2, retention = 1000 },
}
