-- spec.lua: the spec runner behind `sluice test`: busted's language (describe/it/hooks/pending/
-- finally/insulate/expose/randomize/tags, the done callback) and command line, with luassert's
-- assert. It runs inside the server's event loop (each test body and hook in its own task via
-- host.run), so specs make real requests and drive the virtual clock. Without a host (the
-- self-tests) bodies run with xpcall.
local L = require "spec_luassert"
local cli = require "spec_cli"
local output = require "spec_output"

local M = {
  reset_hooks = {}, -- functions called after every test (besides host.reset)
}

L.runtime_sources[debug.getinfo(1, "S").source] = true
-- short_src of the runner's files, to keep them out of the tracebacks a user reads
local RUNTIME_SHORT = {}
local function runtime_short(src)
  if RUNTIME_SHORT[src] ~= nil then return RUNTIME_SHORT[src] end
  local is = false
  for s in pairs(L.runtime_sources) do
    if s:sub(2) == src then is = true end
  end
  RUNTIME_SHORT[src] = is or src:find("/luassert/", 1, true) ~= nil
  return RUNTIME_SHORT[src]
end

local host = {}
local state = { block = nil, test = nil, running = false, file = nil }
local run -- the run: options, results, counters (see M.main)

---------------------------------------------------------------- the language

local function callable(f)
  return type(f) == "function" or (type(f) == "table" and getmetatable(f) and getmetatable(f).__call ~= nil)
end

-- A misuse of the language, reported at the user's line (never this file's).
local function misuse(msg)
  local loc = L.location(2)
  error((loc and (loc .. ": ") or "") .. msg, 0)
end

local function current(what)
  if state.running or not state.block then
    misuse(what .. " must be called while the spec file loads, not inside a test or hook")
  end
  return state.block
end

local HOOKS = { "before_each", "after_each", "strict_setup", "strict_teardown", "lazy_setup", "lazy_teardown" }

local function new_block(name, parent, file, line)
  local b = { kind = "block", name = name, parent = parent, file = file, line = line, children = {}, hooks = {} }
  for _, k in ipairs(HOOKS) do b.hooks[k] = {} end
  return b
end

local function names_of(block, leaf)
  local parts = { leaf }
  while block do
    if block.name then table.insert(parts, 1, block.name) end
    block = block.parent
  end
  return parts
end

local function user_line()
  local loc = L.location(2)
  return loc and tonumber(loc:match(":(%d+)$"))
end

local function add_block(envmode, name, fn)
  local parent = current(envmode)
  if not callable(fn) then misuse(envmode .. " expects a name and a function") end
  local b = new_block(tostring(name), parent, parent.file, user_line())
  parent.children[#parent.children + 1] = b
  if envmode == "insulate" or envmode == "expose" then
    -- globals the block sets stay inside it (insulate) or become visible to the rest of the
    -- run (expose): closures created by fn inherit this environment
    local outer = type(fn) == "function" and getfenv(fn) or run.exposed
    local env = setmetatable({}, { __index = outer, __newindex = envmode == "expose" and run.exposed or nil })
    if type(fn) == "function" then setfenv(fn, env) end
  end
  state.block = b
  fn()
  state.block = parent
end

local function block_api(envmode)
  return function(name, fn)
    if fn == nil and callable(name) then name, fn = envmode, name end
    if fn == nil then
      -- busted's curried form: describe "name" (function() ... end)
      return function(f) add_block(envmode, name, f) end
    end
    add_block(envmode, name, fn)
  end
end

local function add_test(name, fn, pending)
  local b = current(pending and "pending" or "it")
  if fn ~= nil and not callable(fn) then misuse("it expects a name and a function") end
  name = tostring(name)
  local parts = names_of(b, name)
  local t = { kind = "test", name = name, fn = fn, pending = pending or fn == nil, parent = b,
    file = b.file, line = user_line(), full = table.concat(parts, " > "), bname = table.concat(parts, " ") }
  b.children[#b.children + 1] = t
  return t
end

function M.it(name, fn)
  if fn == nil and callable(name) then name, fn = "it", name end
  local t = add_test(name, fn, false)
  if fn == nil then
    -- it "name" (function() ... end); an it(name) never given a body stays pending
    return function(f)
      if not callable(f) then misuse("it expects a name and a function") end
      t.fn, t.pending = f, false
    end
  end
end

-- pending(name [, fn]) while loading: a placeholder test. Inside a test: stops it as pending.
function M.pending(name, fn)
  if state.running then L.pending(name) end
  add_test(name or "pending", fn, true)
end

local function hook(kind, label)
  return function(fn)
    if not callable(fn) then misuse(label .. " expects a function") end
    local b = current(label)
    local k = kind
    if run and run.opts and run.opts.lazy then
      k = kind == "strict_setup" and label == "setup" and "lazy_setup"
        or kind == "strict_teardown" and label == "teardown" and "lazy_teardown" or kind
    end
    local list = b.hooks[k]
    list[#list + 1] = { fn = fn, label = label }
  end
end
M.before_each, M.after_each = hook("before_each", "before_each"), hook("after_each", "after_each")
M.setup, M.teardown = hook("strict_setup", "setup"), hook("strict_teardown", "teardown")

-- Registers a cleanup for the running test (busted's finally).
function M.finally(fn)
  if not state.test then misuse("finally must be called inside a test") end
  if not callable(fn) then misuse("finally expects a function") end
  table.insert(state.test.finally, fn)
end

-- randomize([seed]) in a describe (or at the top of a file): run its tests in random order.
function M.randomize(...)
  local b = current("randomize")
  local n, a1, a2 = select("#", ...), ...
  b.randomize = n == 0 or a1
  if b.randomize then b.seed = tonumber(a1) or tonumber(a2) end
end

local DSL = {
  describe = block_api("describe"), context = block_api("describe"),
  insulate = block_api("insulate"), expose = block_api("expose"),
  it = M.it, spec = M.it, test = M.it, pending = M.pending, finally = M.finally,
  before_each = M.before_each, after_each = M.after_each,
  setup = M.setup, teardown = M.teardown,
  lazy_setup = hook("lazy_setup", "lazy_setup"), lazy_teardown = hook("lazy_teardown", "lazy_teardown"),
  strict_setup = hook("strict_setup", "strict_setup"), strict_teardown = hook("strict_teardown", "strict_teardown"),
  randomize = M.randomize,
  assert = L.assert, spy = L.spy, stub = L.stub, mock = L.mock, match = L.match,
}

---------------------------------------------------------------- running code

local function now()
  if host.now then return host.now() end
  return os.clock()
end

-- Runs fn to completion: on the event loop when the host provides it (with the per-test
-- timeout), else with xpcall. Returns true, or false, error value, traceback. The error value
-- is kept as raised (failure and pending objects survive), the traceback taken where it was.
local function call(fn, timeout)
  local captured, tb
  local function handler(e)
    captured, tb = e, debug.traceback("", 2)
    return e
  end
  if host.run then
    local ok, msg, trace = host.run(function()
      local ok, e = xpcall(fn, handler)
      if not ok then error(e, 0) end
    end, timeout)
    if ok then return true end
    if captured ~= nil then return false, captured, tb end
    return false, msg, trace -- the host stopped it (a timeout): nothing was raised in Lua
  end
  local ok = xpcall(fn, handler)
  if ok then return true end
  return false, captured, tb
end

-- busted's done callback: a test function with a parameter gets done() and passes once it is
-- called (done:wait(...)/wait_unordered(...) then done(token) sign off named steps).
local Done = {}
Done.__index = Done
function Done.new(finish)
  return setmetatable({ tokens = {}, got = {}, ordered = true, finish = finish }, Done)
end
function Done:wait(...)
  for _, tok in ipairs({ ... }) do
    if type(tok) ~= "string" then error("done:wait(): tokens must be strings, got " .. type(tok), 2) end
    self.tokens[#self.tokens + 1] = tok
  end
end
function Done:wait_ordered(...) self.ordered = true; self:wait(...) end
function Done:wait_unordered(...) self.ordered = false; self:wait(...) end
local function listing(d)
  return ("received: %s; still expected: %s"):format(
    #d.got > 0 and table.concat(d.got, ", ") or "none", #d.tokens > 0 and table.concat(d.tokens, ", ") or "none")
end
function Done:done(tok)
  if tok ~= nil then
    if type(tok) ~= "string" then error("done(): tokens must be strings, got " .. type(tok), 2) end
    local at
    if self.ordered then
      if self.tokens[1] == tok then at = 1 end
    else
      for i, t in ipairs(self.tokens) do if t == tok then at = i break end end
    end
    if not at then
      error(("done(%q): unexpected token (%s)"):format(tok, listing(self)), 2)
    end
    table.remove(self.tokens, at)
    self.got[#self.got + 1] = tok
  end
  if #self.tokens == 0 then self.finish() end
end
Done.__call = function(self, tok) return self:done(tok) end

local function takes_done(fn)
  local info = type(fn) == "function" and debug.getinfo(fn, "u")
  return info and (info.nparams or 0) >= 1
end

local function async_body(fn)
  return function()
    local w = host.waiter and host.waiter()
    local finished = false
    local d = Done.new(function()
      if finished then return end
      finished = true
      if w then w:wake() end
    end)
    fn(d)
    if finished then return end
    if not w then error("the test takes a done callback but returned without calling done()", 0) end
    local ok, err = w:wait()
    if not ok then error(err, 0) end
  end
end

-- The innermost frame of the spec file in a traceback: the line to report.
local function spec_loc(tb, file)
  if type(tb) ~= "string" or not file then return nil end
  local line = tb:match(file:gsub("%p", "%%%0") .. ":(%d+):")
  return line and (file .. ":" .. line)
end

-- Keeps the frames a user can act on: not C, not the runner or luassert, nothing below the
-- spec file's own frame.
local function trim_traceback(tb, file)
  local lines = {}
  for l in tb:gmatch("[^\n]+") do
    l = l:gsub("^%s+", "")
    local src = l:match("^(.-):%d+:")
    if l ~= "" and l ~= "stack traceback:" and not l:find("[C]", 1, true)
      and not (src and runtime_short(src)) and l ~= "(tail call): ?" and #lines < 8 then
      lines[#lines + 1] = l
      if l:sub(1, #file + 1) == file .. ":" then break end
    end
  end
  return lines
end

local function classify(err)
  if L.is_pending(err) then return "pending" end
  if L.is_failure(err) then return "failure" end
  return "error"
end

-- Turns what call() returned into the message reported for a test.
local function describe_err(phase, err, tb, file)
  local msg
  if L.is_failure(err) or L.is_pending(err) then
    msg = err.message
    if run.opts.verbose and L.is_failure(err) and type(tb) == "string" then
      local frames = trim_traceback(tb, file)
      if #frames > 0 then msg = msg .. "\n  traceback:\n    " .. table.concat(frames, "\n    ") end
    end
  else
    local mt = type(err) == "table" and getmetatable(err)
    if type(err) == "string" or type(err) == "number" or (mt and mt.__tostring) then
      msg = tostring(err)
    else
      msg = "error object: " .. L.format(err)
    end
    local loc = spec_loc(tb, file)
    local deeper = loc and msg:sub(1, #loc + 1) ~= loc .. ":"
    if deeper then msg = loc .. ": " .. msg end
    -- The error came from code the spec called (a handler, a module): show where, since the
    -- spec's line alone does not explain it.
    if (deeper or run.opts.verbose) and type(tb) == "string" and not msg:find("^[^\n]*timed out after") then
      local frames = trim_traceback(tb, file)
      if #frames > 1 or (run.opts.verbose and #frames > 0) then
        msg = msg .. "\n  traceback:\n    " .. table.concat(frames, "\n    ")
      end
    end
  end
  return phase and (phase .. ": " .. msg) or msg
end

---------------------------------------------------------------- reporting

local function report(t, status, secs, msg, log)
  local r = { file = t.file, line = t.line or 0, name = t.full, bname = t.bname, leaf = t.name,
    status = status, time = secs or 0, msg = msg, log = log }
  run.results[#run.results + 1] = r
  local c = run.counts
  c[status] = c[status] + 1
  if status == "failure" or status == "error" then
    if not run.opts["keep-going"] then run.stop = true end
  end
  run.out.test(r)
end

-- The server log of the test (handler errors with their traceback), without timestamps.
local function take_log()
  local log = host.take_log and host.take_log()
  if not log then return nil end
  local lines = {}
  for l in log:gmatch("[^\n]+") do
    lines[#lines + 1] = l:gsub("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+ ", ""):gsub("\t", "  ")
  end
  return table.concat(lines, "\n")
end

---------------------------------------------------------------- order

-- A small deterministic generator (Park-Miller), so shuffling never touches math.random,
-- which the application's handlers may use.
local function shuffled(list, seed)
  local x = (math.floor(math.abs(seed or 0)) % 2147483646) + 1
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  for i = #out, 2, -1 do
    x = (x * 16807) % 2147483647
    local j = x % i + 1
    out[i], out[j] = out[j], out[i]
  end
  return out
end

local function sorted(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  table.sort(out, function(a, b)
    if a.name and b.name then return a.name < b.name end
    return b.name ~= nil
  end)
  return out
end

local function order(b)
  if b.randomize or (b.randomize == nil and run.opts["shuffle-tests"]) then
    return shuffled(b.children, b.seed or run.seed)
  elseif run.opts["sort-tests"] then
    return sorted(b.children)
  end
  return b.children
end

---------------------------------------------------------------- execution

local function run_hooks(list, phase, file)
  for _, h in ipairs(list) do
    local ok, err, tb = call(h.fn, run.timeout)
    if not ok then return classify(err), describe_err(phase or h.label, err, tb, file) end
  end
end

-- lazy_setup of every block of the chain that has not run it yet (outermost first); returns the
-- failure of the first that failed (now or earlier), if any.
local function lazy_setups(chain, file)
  for _, b in ipairs(chain) do
    if b.lazy == nil then
      b.lazy = true
      local st, msg = run_hooks(b.hooks.lazy_setup, "lazy_setup", file)
      if st then b.lazy = { status = st == "pending" and "pending" or "error", msg = msg } end
    end
    if type(b.lazy) == "table" then return b.lazy end
  end
end

local function run_test(t, chain)
  local file = t.file
  local t0 = now()
  local status, msg = "success", nil
  local function record(st, m)
    if status == "success" or (status == "pending" and st ~= "pending") then status, msg = st, m end
  end
  local lazy = lazy_setups(chain, file)
  if lazy then
    report(t, lazy.status, now() - t0, lazy.msg, take_log())
    return
  end
  local snap = L.snapshot()
  state.test = { finally = {} }
  local function try(phase, fn)
    local ok, err, tb = call(fn, run.timeout)
    if not ok then
      local st = classify(err)
      -- an assertion failing in a hook is an error of the test, as in busted
      if phase and st == "failure" then st = "error" end
      record(st, describe_err(phase, err, tb, file))
    end
    return ok
  end
  local ancestor = #chain -- after_each runs from here outwards (busted: from the failing block)
  local ready = true
  for i, b in ipairs(chain) do
    for _, h in ipairs(b.hooks.before_each) do
      if not try("before_each", h.fn) then ready = false break end
    end
    if not ready then ancestor = i break end
  end
  if ready then
    local async = takes_done(t.fn)
    if not try(nil, async and async_body(t.fn) or t.fn) and async and msg and msg:find("^timed out after") then
      msg = ("%s:%d: %s waiting for done()"):format(file, t.line or 0, msg)
    end
  end
  local fin = state.test.finally
  for i = #fin, 1, -1 do try("finally", fin[i]) end
  for i = ancestor, 1, -1 do
    for _, h in ipairs(chain[i].hooks.after_each) do try("after_each", h.fn) end
  end
  if host.reset then try("reset", host.reset) end
  if #M.reset_hooks > 0 then
    try("reset", function() for _, h in ipairs(M.reset_hooks) do h() end end)
  end
  state.test = nil
  snap:revert()
  report(t, status, now() - t0, msg, take_log())
end

-- Counts the selected tests under b (all, and those that will run) and marks them.
local function selected(t)
  local o = run.opts
  local function find_any(pats, ...)
    for _, p in ipairs(pats) do
      for i = 1, select("#", ...) do
        if select(i, ...):find(p) then return true end
      end
    end
    return false
  end
  for _, tag in ipairs(o["exclude-tags"]) do
    if t.bname:find("#" .. tag) then return false end
  end
  if #o.tags > 0 then
    local any = false
    for _, tag in ipairs(o.tags) do
      if t.bname:find("#" .. tag) then any = true break end
    end
    if not any then return false end
  end
  if find_any(o["filter-out"], t.full, t.bname) then return false end
  if #o.filter > 0 and not find_any(o.filter, t.full, t.bname) then return false end
  return true
end

local function count(b)
  local nsel, nrun, ntotal = 0, 0, 0
  for _, c in ipairs(b.children) do
    if c.kind == "block" then
      local s, r, n = count(c)
      nsel, nrun, ntotal = nsel + s, nrun + r, ntotal + n
    else
      ntotal = ntotal + 1
      c.selected = selected(c)
      if c.selected then
        nsel = nsel + 1
        if not c.pending then nrun = nrun + 1 end
      end
    end
  end
  b.nsel, b.nrun = nsel, nrun
  return nsel, nrun, ntotal
end

-- Runs a block's selected tests. strict setup runs only when a test of the block will run, and
-- a failing setup fails every test below it without running them.
local function run_block(b, chain, inherited)
  if b.nsel == 0 or run.stop then return end
  chain[#chain + 1] = b
  local snap = L.snapshot()
  local failure = inherited
  local did_setup = false
  if not failure and b.nrun > 0 then
    did_setup = true
    local st, msg = run_hooks(b.hooks.strict_setup, nil, b.file)
    if st then failure = { status = st == "pending" and "pending" or "error", msg = msg } end
  end
  for _, c in ipairs(order(b)) do
    if run.stop then break end
    if c.kind == "block" then
      run_block(c, chain, failure)
    elseif c.selected and c.pending then
      report(c, "pending", 0, nil, nil)
    elseif c.selected and failure then
      report(c, failure.status, 0, failure.msg, take_log())
    elseif c.selected then
      run_test(c, chain)
    end
  end
  local function teardown(list, phase)
    local st, msg = run_hooks(list, phase, b.file)
    if st then
      -- the block's tests already reported; a failing teardown counts as its own entry
      report({ file = b.file, line = b.line, name = phase, full = table.concat(names_of(b, phase), " > "),
        bname = table.concat(names_of(b, phase), " ") }, "error", 0, msg, take_log())
    end
  end
  if b.lazy then teardown(b.hooks.lazy_teardown, "lazy_teardown") end
  b.lazy = nil
  if did_setup then teardown(b.hooks.strict_teardown, "teardown") end
  snap:revert()
  chain[#chain] = nil
end

local function make_env()
  local env = {}
  for k, v in pairs(host.globals or {}) do env[k] = v end
  for k, v in pairs(DSL) do env[k] = v end
  return setmetatable(env, { __index = run.exposed })
end

-- Loads a spec file (running its describe bodies, which collect the tree). A file that fails to
-- compile or to load is reported as `file:line: message`; returns the root block or nil.
local function load_file(file)
  local root = new_block(nil, nil, file)
  local chunk, err = loadfile(file)
  if chunk then
    setfenv(chunk, make_env())
    state.block, state.running, state.file = root, false, file
    L.current_file = file
    local ok, lerr = xpcall(chunk, function(e)
      local loc = spec_loc(debug.traceback("", 2), file)
      e = (type(e) == "string" or L.is_failure(e)) and tostring(e) or L.format(e)
      if loc and e:sub(1, #loc + 1) ~= loc .. ":" then e = loc .. ": " .. e end
      return e
    end)
    state.block, state.file = nil, nil
    if not ok then chunk, err = nil, lerr end
  end
  if not chunk then
    local e = { file = file, msg = tostring(err) }
    run.load_errors[#run.load_errors + 1] = e
    run.out.load_error(e)
    L.current_file = nil
    return nil
  end
  return root
end

local function run_file(file)
  local root = load_file(file)
  if not root then return end
  local nsel, nrun, ntotal = count(root)
  run.defined, run.selected = run.defined + ntotal, run.selected + nsel
  L.current_file = file
  state.running = true
  run_block(root, {}, nil)
  state.running = false
  L.current_file = nil
end

-- --list: the selected tests with their file:line, nothing runs.
local function list_file(file)
  local root = load_file(file)
  if not root then return end
  local _, _, ntotal = count(root)
  run.defined = run.defined + ntotal
  local function walk(b)
    for _, c in ipairs(b.children) do
      if c.kind == "block" then walk(c)
      elseif c.selected then
        run.selected = run.selected + 1
        run.say(("%s:%d: %s"):format(c.file, c.line or 0, c.full))
      end
    end
  end
  walk(root)
end

---------------------------------------------------------------- main

local function urandom_seed()
  local f = io.open("/dev/urandom", "rb")
  if not f then return os.time() end
  local s = f:read(4)
  f:close()
  local v = 0
  for i = 1, #s do v = v * 256 + s:byte(i) end
  return v
end

local function active_filters(o)
  local parts = {}
  for _, p in ipairs(o.filter) do parts[#parts + 1] = ("--filter %q"):format(p) end
  for _, p in ipairs(o["filter-out"]) do parts[#parts + 1] = ("--filter-out %q"):format(p) end
  if #o.tags > 0 then parts[#parts + 1] = "--tags " .. table.concat(o.tags, ",") end
  if #o["exclude-tags"] > 0 then parts[#parts + 1] = "--exclude-tags " .. table.concat(o["exclude-tags"], ",") end
  return parts
end

-- Runs code given by -e and --helper before the specs, in the environment the spec files see.
local function prelude(o)
  local chunks = {}
  for i, stmt in ipairs(o.e) do
    local f, err = loadstring(stmt, "=-e #" .. i)
    if not f then return nil, err end
    chunks[#chunks + 1] = { f = f }
  end
  if o.helper then
    local f, err = loadfile(o.helper)
    if not f then return nil, "cannot load --helper: " .. tostring(err) end
    chunks[#chunks + 1] = { f = f, args = o.Xhelper }
  end
  -- globals the prelude sets are the specs' globals (as with expose)
  local env = setmetatable({}, { __index = make_env(), __newindex = run.exposed })
  for _, c in ipairs(chunks) do
    setfenv(c.f, env)
    local ok, err, tb = call(function() c.f(unpack(c.args or {})) end, run.timeout)
    if not ok then return nil, describe_err(nil, err, tb, o.helper or "-e") end
  end
  return true
end

-- Entry point for `sluice test`: args are the CLI arguments after "test", h the host hooks (see
-- docs/testing.md). Returns the exit status.
function M.main(args, h)
  host = h or {}
  local say = host.write and function(s) host.write(s .. "\n") end or function(s)
    io.stdout:write(s, "\n")
    io.stdout:flush()
  end
  local function err_line(s) io.stderr:write(s, "\n") end
  local parsed, perr = cli.parse(args or {})
  if not parsed then err_line("sluice test: " .. perr) return 2 end
  if parsed.help then say(cli.USAGE) return 0 end
  if parsed.version then
    say("sluice test: busted's language and options, " .. tostring(L.assert._VERSION) .. " (lua-luassert)")
    return 0
  end
  local o, cerr = cli.configure(parsed)
  if not o then err_line("sluice test: " .. cerr) return 2 end
  if o.unknown_keys then
    err_line(("sluice test: %s: ignoring unknown option(s): %s"):format(o.busted_file, table.concat(o.unknown_keys, ", ")))
  end
  local make = output.handlers[o.output]
  if not make then
    local names = {}
    for k in pairs(output.handlers) do names[#names + 1] = k end
    table.sort(names)
    err_line(("sluice test: unknown output %q (one of: %s)"):format(tostring(o.output), table.concat(names, ", ")))
    return 2
  end
  if o.lang ~= "en" and not pcall(require, "luassert.languages." .. o.lang) then
    err_line("sluice test: luassert has no language " .. tostring(o.lang))
    return 2
  end
  if o.lpath and o.lpath ~= "" then package.path = (o.lpath .. ";" .. package.path):gsub(";;+", ";") end
  if o.cpath and o.cpath ~= "" then package.cpath = (o.cpath .. ";" .. package.cpath):gsub(";;+", ";") end

  local tty = host.isatty
  if type(tty) == "function" then tty = tty() end
  local color = tty == true and (o.output == "sluice" or o.output == "utfTerminal")
  L.set_color(color)
  run = { opts = o, results = {}, load_errors = {}, timeout = o.timeout, say = say,
    counts = { success = 0, failure = 0, error = 0, pending = 0 }, defined = 0, selected = 0,
    exposed = setmetatable({}, { __index = _G }), seed = o.seed or urandom_seed() }
  local ctx = { say = say, err = err_line, color = color, verbose = o.verbose,
    suppress_pending = o["suppress-pending"], xoutput = o.Xoutput,
    write = function(s) io.stdout:write(s) io.stdout:flush() end }
  run.out = make(ctx)
  local t0 = now()

  local files, problems = cli.find_files(o)
  local reasons = {}
  for _, p in ipairs(problems) do reasons[#reasons + 1] = p.msg end

  local ok, herr = prelude(o)
  if not ok then
    err_line("sluice test: " .. tostring(herr))
    return 2
  end

  if o.list then
    for _, f in ipairs(files) do list_file(f) end
    for _, r in ipairs(reasons) do err_line("sluice test: " .. r) end
    if run.selected == 0 then err_line("sluice test: no test selected") return 2 end
    return (#reasons > 0 or #run.load_errors > 0) and 2 or 0
  end

  local shuffle_files = o["shuffle-files"]
  if (o["shuffle-files"] or o["shuffle-tests"]) and o.output == "sluice" then
    say(("sluice test: random order, seed %d (rerun with --seed %d)"):format(run.seed, run.seed))
  end
  local runs = o["repeat"]
  for rep = 1, runs do
    run.out.start(rep, runs)
    local order_ = files
    if shuffle_files then order_ = shuffled(files, run.seed + rep - 1)
    elseif o["sort-files"] then order_ = {} for i, f in ipairs(files) do order_[i] = f end table.sort(order_) end
    for _, f in ipairs(order_) do
      if run.stop then break end
      run_file(f)
    end
    if run.stop then break end
  end

  local c = run.counts
  local ran = c.success + c.failure + c.error
  if #files > 0 and run.defined == 0 and #run.load_errors == 0 then
    reasons[#reasons + 1] = "the spec files define no tests"
  elseif run.defined > 0 and run.selected == 0 and #active_filters(o) > 0 then
    reasons[#reasons + 1] = ("no test matches %s (%d test(s) in %d file(s))"):format(
      table.concat(active_filters(o), " "), run.defined / runs, #files)
  elseif run.selected > 0 and ran == 0 then
    reasons[#reasons + 1] = ("no test ran: all %d selected test(s) are pending"):format(c.pending)
  elseif #files == 0 and #problems == 0 then
    reasons[#reasons + 1] = "no spec files to run"
  end
  if o.junit then
    local doc = output.junit(run.results, run.load_errors)
    local f, jerr = io.open(o.junit, "w")
    if f then f:write(doc) f:close()
    else reasons[#reasons + 1] = "cannot write junit file: " .. tostring(jerr) end
  end
  for _, r in ipairs(reasons) do run.out.reason(r) end
  local sum = { passed = c.success, failed = c.failure + c.error, successes = c.success, failures = c.failure,
    errors = c.error + #run.load_errors, pending = c.pending, duration = now() - t0 }
  local fin = run.out.finish(sum)
  if #reasons > 0 or #run.load_errors > 0 or fin == false then return 2 end
  if c.failure + c.error > 0 then return 1 end
  if ran == 0 then return 2 end
  return 0
end

return M
