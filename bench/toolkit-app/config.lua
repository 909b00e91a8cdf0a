-- config.lua for bench/toolkit.sh: as bench/app (one worker, no access log, no rate limits),
-- plus the password parameters of the default config.
return {
  port = tonumber(os.getenv("PORT")) or 5090,
  workers = 1,
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off", level = "warn" },
  password = { ops_limit = 2, mem_limit_kb = 19456, threads = 2 },
}
