-- config.lua for bench/seed-scenario/run.sh and bench/scale.sh: the team board of scripts/
-- (unchanged) with the knobs a load test from one machine needs. The scripts put the directory of
-- config.lua first on package.path, so run.sh copies this file into a temp dir next to links to
-- the repository's scripts/, public/ and migrations/ (the app itself is not copied or changed).
--   * every client comes from 127.x addresses, so the spec's `api` policy (1,000 per 15 min
--     per IP) would answer 429 within a second: the policies stay on (their cost is measured)
--     but with limits no test reaches;
--   * 10,000 subscribers + API connections exceed the default limits.max_connections (10,000);
--     one process may hold 20,000 open files here, so just under it;
--   * access log off (production), as a server under this load would run;
--   * the load tool names its users with X-User (app.trust_x_user), not accounts and tokens.
-- SCEN_WORKERS overrides workers ("auto" = one per core); PORT overrides the port.
local HUGE = 1000000000
return {
  port = tonumber(os.getenv("PORT")) or 5000,
  workers = tonumber(os.getenv("SCEN_WORKERS")) or "auto",
  env = "production",
  scripts = { "scripts/app.lua" },
  log = { access = "off", level = "warn" },
  ratelimit = {
    api        = { limit = HUGE, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = HUGE, window = 60,  key = "ip", paths = { "/metrics", "/health", "/ready" } },
    login      = { limit = HUGE, window = 60,  key = "ip", paths = { "/api/login" }, methods = { "POST" } },
    signup     = { limit = HUGE, window = 60,  key = "ip", paths = { "/api/signup" }, methods = { "POST" } },
  },
  limits = { max_connections = 19900 },
  sse = { max_connections = tonumber(os.getenv("SCEN_MAX_STREAMS")) or 19850, per_user = 10, heartbeat = 30,
          retention = 1000 },
  database = { url = os.getenv("DATABASE_URL") },
  redis = { url = os.getenv("REDIS_URL") },
  session = { keys = os.getenv("SLUICE_SESSION_KEYS") or "bench-seed-scenario-key-0123456789abcdef" },
  app = {
    page_size = 20,
    max_page_size = 100,
    emojis = { "👍", "❤️", "😂", "🎉", "😮", "😢" },
    trust_x_user = true,
  },
}
