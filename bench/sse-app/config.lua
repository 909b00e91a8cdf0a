-- config.lua for bench/sse.sh: one worker (SSE_WORKERS overrides, for the capacity probe),
-- no access log, no rate limits, caps raised to what one process can hold here.
return {
  port = tonumber(os.getenv("PORT")) or 5081,
  workers = tonumber(os.getenv("SSE_WORKERS")) or 1,
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  log = { access = "off", level = "warn" },
  -- connections (HTTP + SSE) per instance: just under the open-files limit (20,000 here, and it
  -- cannot be raised), so that beyond it new connections get a 503 instead of accept() failing
  -- with EMFILE; 50 fds stay for listening sockets, event fds, logs, database and Redis
  limits = { max_connections = tonumber(os.getenv("SSE_MAX_CONNECTIONS")) or 19950 },
  -- SSE streams: 50 below that, so that publishes and health checks still get in when full
  sse = { max_connections = tonumber(os.getenv("SSE_MAX_STREAMS")) or 19900, per_user = 1000000 },
}
