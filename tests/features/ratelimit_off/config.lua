-- ratelimit_off feature suite: `ratelimit = false` turns rate limiting off entirely.
return { scripts = { "app.lua" }, ratelimit = false }
