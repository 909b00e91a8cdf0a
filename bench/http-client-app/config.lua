-- config.lua for bench/http-client.sh: one worker, no access log, no rate limits (as bench/app/),
-- the outbound client at its defaults.
return {
  port = tonumber(os.getenv("PORT")) or 5090,
  workers = 1,
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off", level = "warn" },
}
