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
  },

  sse = { max_connections = 10000, per_user = 10, heartbeat = 30, retention = 1000 },
  database = { url = os.getenv("DATABASE_URL") },
  redis = { url = os.getenv("REDIS_URL") },

  app = {
    page_size = 20,        -- default ?limit=
    max_page_size = 100,   -- largest ?limit=
    emojis = { "👍", "❤️", "😂", "🎉", "😮", "😢" },
  },
}
