-- ratelimit feature suite: small policies so the specs can exhaust them; no trusted proxies.
return {
  scripts = { "app.lua" },
  ratelimit = {
    api = { limit = 5, window = 10, paths = { "/api" } },
    deep = { limit = 2, window = 10, paths = { "/api/deep" } },
    monitoring = { limit = 3, window = 60, paths = { "/metrics" } },
    partner = { limit = 2, window = 10, key = "header:x-api-key", paths = { "/partner" } },
    tenant = { limit = 2, window = 10, paths = { "/tenant" },
               key = function(req) return req.query.tenant or "none" end },
  },
}
