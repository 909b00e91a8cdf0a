-- driver.lua: runs the spec runner under plain luajit (no event loop, no
-- timeouts), as the self-tests of lua/spec.lua do.
os.exit(require("spec").main(arg, {}))
