-- runtime_prod feature suite: env = "production" hides error details from clients.
return { scripts = { "app.lua" }, env = "production", ratelimit = false }
