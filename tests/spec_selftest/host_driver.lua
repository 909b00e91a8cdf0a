-- host_driver.lua: runs the spec runner with a stand-in for the C host:
-- host.run drives each body in a coroutine with a deadline (an instruction
-- hook counting CPU time, so a spinning test is stopped), plus globals and reset hooks.
jit.off() -- compiled loops skip debug hooks; the stand-in timeout needs them
local spec = require("spec")
local resets = { n = 0 }
table.insert(spec.reset_hooks, function() resets.n = resets.n + 1 end)

local host = {
  globals = {
    resets = resets,
    request = function(method, path) return { status = 200, body = method .. " " .. path } end,
  },
  isatty = function() return os.getenv("SPEC_TTY") == "1" end,
}

-- The traceback is taken inside the coroutine (xpcall handler, or the hook
-- for a timeout): once a LuaJIT coroutine has unwound, its lines are gone.
function host.run(fn, timeout)
  local tb
  local co = coroutine.create(function()
    return xpcall(fn, function(e) tb = tb or debug.traceback("", 2); return e end)
  end)
  local deadline = os.clock() + timeout
  debug.sethook(co, function()
    if timeout > 0 and os.clock() > deadline then
      tb = debug.traceback("", 2)
      error(("timed out after %gs"):format(timeout), 0)
    end
  end, "", 1000)
  while true do
    local resumed, ok, err = coroutine.resume(co)
    if not resumed then return false, ok, tb end
    if coroutine.status(co) == "dead" then
      if ok then return true end
      return false, err, tb
    end
    -- a body that yielded would wait for I/O here; the stand-in resumes it
  end
end

os.exit(spec.main(arg, host))
