-- config.lua for bench/lua.sh: one worker, no access log, no rate limits (as bench/app/), and the
-- runaway guard at its defaults (limits.script_timeout = 5, limits.lua_memory = 512, limits.jit =
-- true) unless BENCH_SCRIPT_TIMEOUT / BENCH_JIT say otherwise (bench/lua.sh's "noguard" contender
-- sets script_timeout = 0, its "nojit" one jit = false).
return {
  port = tonumber(os.getenv("PORT")) or 5081,
  workers = 1,
  env = "production",
  scripts = { "app.lua" },
  ratelimit = false,
  compression = { enabled = false },
  log = { access = "off", level = "warn" },
  limits = {
    script_timeout = tonumber(os.getenv("BENCH_SCRIPT_TIMEOUT") or ""),
    jit = os.getenv("BENCH_JIT") == "false" and false or nil,   -- set only when asked: an older
  },                                                            -- build (BENCH_BASE) has no limits.jit
}
