-- toolkit feature suite: cheap Argon2id parameters so the specs run fast, two session keys (the
-- second one verifies only: a key being rotated out).
return {
  scripts = { "app.lua" },
  ratelimit = false,
  password = { ops_limit = 1, mem_limit_kb = 8192, threads = 2 },
  session = { keys = { "new-key-0123456789abcdef0123456789abcdef", "old-key-0123456789abcdef0123456789abcdef" } },
}
