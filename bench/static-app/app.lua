-- app.lua for bench/static.sh: the benchmark's file directory under /s, served by the C core.
local app = require "sluice"

app.static("/s", os.getenv("BENCH_STATIC_DIR") or "files")
