-- config.lua: the live team board (see docs/example-app.md and docs/config.md).
return {
  port = 5000,
  workers = "auto",
  scripts = { "scripts/app.lua" },

  -- The scalability spec's policies (these are also the defaults), plus a tight one on
  -- logins. The longest matching path prefix picks a request's policy; SSE is never counted.
  ratelimit = {
    api        = { limit = 1000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 300,  window = 60,  key = "ip", paths = { "/metrics", "/health", "/ready" } },
    login      = { limit = 10,   window = 60,  key = "ip", paths = { "/api/login" }, methods = { "POST" } },
    signup     = { limit = 20,   window = 3600, key = "ip", paths = { "/api/signup" }, methods = { "POST" } },
  },

  sse = { max_connections = 10000, per_user = 10, heartbeat = 30, retention = 1000 },
  database = { url = os.getenv("DATABASE_URL") },
  redis = { url = os.getenv("REDIS_URL") },

  -- Argon2id for the accounts (the defaults, OWASP's 19 MiB / 2 passes), hashed on 2 threads.
  password = { ops_limit = 2, mem_limit_kb = 19456, threads = 2 },
  -- Signs the session cookies and the bearer tokens. Set SLUICE_SESSION_KEYS in production
  -- (head -c 32 /dev/urandom | base64; "new,old" while rotating): the board refuses to start
  -- in production with this development key.
  session = { keys = os.getenv("SLUICE_SESSION_KEYS") or "dev-only-board-key-change-me-0123456789" },
  -- log = { format = "json" },   -- one JSON object per line: error log, app.log and access log

  app = {
    page_size = 20,        -- default ?limit=
    max_page_size = 100,   -- largest ?limit=
    emojis = { "👍", "❤️", "😂", "🎉", "😮", "😢" },
    trust_x_user = false,  -- true: accept "X-User: name" as the user (only behind a proxy that sets it)
  },
}
