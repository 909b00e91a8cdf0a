-- runner checks: fixtures run by tests/features/run.sh to check what `sluice test` reports.
return { scripts = { "app.lua" }, ratelimit = false }
