-- runtime feature suite: handler results, errors, the watchdog, limits, sleeps and timers.
return {
  scripts = { "app.lua" },
  ratelimit = false,
  limits = { script_timeout = 0.5, body_size = 1024, request_timeout = 60 },
}
