-- proxy feature suite: sluice behind a trusted proxy on 127.0.0.1 (the spec client's address).
return {
  scripts = { "app.lua" },
  trusted_proxies = { "127.0.0.1" },
  ratelimit = { api = { limit = 2, window = 10, paths = { "/api" } } },
}
