-- sse feature suite: tiny caps and retention so the specs can reach them.
return {
  scripts = { "app.lua" },
  ratelimit = false,
  sse = {
    retention = 3,
    per_user = 2,
    max_connections = 3,
    heartbeat = 5,
    publish_token = "s3cret-token",
  },
}
