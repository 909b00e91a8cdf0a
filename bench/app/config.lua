-- config.lua for bench/http.sh: one worker, no access log, no rate limits, so the
-- benchmark measures the HTTP + Lua hot path the same way the nginx anchor is set up.
return {
  port = tonumber(os.getenv("PORT")) or 5080,
  workers = 1,
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off", level = "warn" },
}
