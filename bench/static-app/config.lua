-- config.lua for bench/static.sh: one worker, no access log, no rate limits (nginx has none
-- either), so the benchmark measures static-file serving alone.
return {
  port = tonumber(os.getenv("PORT")) or 5080,
  workers = 1,
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off", level = "warn" },
}
