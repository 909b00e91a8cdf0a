-- config.lua for bench/db.sh: no access log, no rate limits; DATABASE_URL carries
-- connection_limit=10 (the same 10 connections pgbench and the Node.js pool use).
return {
  port = tonumber(os.getenv("PORT")) or 5090,
  workers = tonumber(os.getenv("BENCH_WORKERS") or "1"),
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off", level = "warn" },
  database = { url = os.getenv("DATABASE_URL") },
}
