-- config.lua: policy knobs for the example application (see docs/config.md).
return {
  port = 5000,
  workers = "auto",
  scripts = { "scripts/app.lua" },
}
