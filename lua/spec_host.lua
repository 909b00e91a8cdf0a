-- spec_host.lua: `sluice test`: the spec runner (lua/spec.lua) wired to the live test instance:
-- each test body runs as a task on the event loop with a timeout, with the spec helpers as
-- globals, the runtime's state reset after each test and its server log kept for the report.
local T = require "sluice.testing"
local spec = require "spec"
local helpers = require "spec_helpers"

return function(args)
  local host = {
    run = T.run,
    now = T.real_now,
    waiter = T.waiter,
    take_log = T.take_log,
    isatty = function() return T.isatty(1) end,
    reset = helpers.reset,
    globals = helpers.globals(),
  }
  return spec.main(args, host)
end
