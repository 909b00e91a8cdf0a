-- templates feature suite: app.render over templates/ (lua/template.lua).
return { scripts = { "app.lua" }, ratelimit = false }
