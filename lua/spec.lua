-- spec.lua: the busted-compatible spec runner behind `sluice test`. It runs
-- inside the server's event loop (each test body in its own coroutine via
-- host.run), so specs can make real requests and drive the virtual clock.
local A = require("spec_assert")

local M = {
  reset_hooks = {}, -- functions called after every test (C side registers them)
}

local MYSRC = debug.getinfo(1, "S").short_src
local USAGE = "usage: sluice test [--filter PATTERN] [--junit FILE] [--timeout SECONDS] [paths...]"

local host = {}
local state = { block = nil, test = nil, running = false }

---------------------------------------------------------------- the DSL

local function new_block(name, parent, file, line)
  return { name = name, parent = parent, file = file, line = line, children = {},
    before_each = {}, after_each = {}, setup = {}, teardown = {} }
end

local function current(what)
  if state.running or not state.block then
    error(what .. " must be called while the spec file loads, not inside a test or hook", 3)
  end
  return state.block
end

local function full_name(block, leaf)
  local parts = { leaf }
  while block do
    if block.name then table.insert(parts, 1, block.name) end
    block = block.parent
  end
  return table.concat(parts, " > ")
end

function M.describe(name, fn)
  local parent = current("describe")
  if type(fn) ~= "function" then error("describe expects a name and a function", 2) end
  local info = debug.getinfo(2, "l")
  local b = new_block(tostring(name), parent, parent.file, info and info.currentline)
  b.kind = "block"
  parent.children[#parent.children + 1] = b
  state.block = b
  fn()
  state.block = parent
end

local function add_test(name, fn, pending)
  local b = current("it")
  if fn ~= nil and type(fn) ~= "function" then error("it expects a name and a function", 3) end
  local info = debug.getinfo(3, "l")
  b.children[#b.children + 1] = { kind = "test", name = tostring(name), fn = fn,
    pending = pending or fn == nil, full = full_name(b, tostring(name)),
    line = info and info.currentline }
end

function M.it(name, fn) add_test(name, fn, false) end
function M.pending(name, fn) add_test(name, fn, true) end

local function hook(kind)
  return function(fn)
    if type(fn) ~= "function" then error(kind .. " expects a function", 2) end
    local list = current(kind)[kind]
    list[#list + 1] = fn
  end
end
M.before_each, M.after_each = hook("before_each"), hook("after_each")
M.setup, M.teardown = hook("setup"), hook("teardown")

-- Registers a cleanup for the running test (busted's finally).
function M.finally(fn)
  if not state.test then error("finally must be called inside a test", 2) end
  table.insert(state.test.finally, fn)
end

local DSL = {
  describe = M.describe, context = M.describe, insulate = M.describe, expose = M.describe,
  it = M.it, spec = M.it, test = M.it, pending = M.pending, finally = M.finally,
  before_each = M.before_each, after_each = M.after_each,
  setup = M.setup, lazy_setup = M.setup, strict_setup = M.setup,
  teardown = M.teardown, lazy_teardown = M.teardown, strict_teardown = M.teardown,
}

---------------------------------------------------------------- running code

local function now()
  if host.now then return host.now() end
  return os.clock()
end

-- Runs fn to completion: on the event loop when the host provides it (with
-- the per-test timeout), else with xpcall (self-tests under plain luajit).
local function call(fn, timeout)
  if host.run then return host.run(fn, timeout) end
  local tb
  local ok, err = xpcall(fn, function(e)
    tb = debug.traceback("", 2)
    return e
  end)
  return ok, err, tb
end

-- The innermost frame of the spec file in a traceback: the line to report.
local function spec_loc(tb, file)
  if type(tb) ~= "string" or not file then return nil end
  local line = tb:match(file:gsub("%p", "%%%0") .. ":(%d+):")
  return line and (file .. ":" .. line)
end

-- Keeps the frames a user can act on: not C, not the runner, and nothing
-- below the spec file's own frame.
local function trim_traceback(tb, file)
  local lines = {}
  for l in tb:gmatch("[^\n]+") do
    l = l:gsub("^%s+", "")
    if l ~= "" and l ~= "stack traceback:" and not l:find("[C]", 1, true)
      and not l:find(MYSRC .. ":", 1, true) and not l:find(A.short_src .. ":", 1, true)
      and l ~= "(tail call): ?" and #lines < 8 then
      lines[#lines + 1] = l
      if l:sub(1, #file + 1) == file .. ":" then break end
    end
  end
  return lines
end

-- Turns what call() returned into the message reported for a test.
local function describe_err(phase, err, tb, file, timeout)
  local msg
  if type(err) == "string" and err == A.last_failure then
    msg = err -- an assertion: already "spec_file:line: message\n  details"
  else
    local mt = type(err) == "table" and getmetatable(err)
    if err == "timeout" then
      msg = ("timed out after %gs"):format(timeout)
    elseif type(err) == "string" or (mt and mt.__tostring) then
      msg = tostring(err)
    else
      msg = "error object: " .. A.pretty(err)
    end
    local loc = spec_loc(tb, file)
    local deeper = loc and msg:sub(1, #loc + 1) ~= loc .. ":"
    if deeper then msg = loc .. ": " .. msg end
    -- The error came from code the spec called (a handler, a module): show
    -- where, since the spec's line alone does not explain it.
    if deeper and type(tb) == "string" and not msg:find("^[^\n]*timed out after") then
      local frames = trim_traceback(tb, file)
      if #frames > 1 then msg = msg .. "\n  traceback:\n    " .. table.concat(frames, "\n    ") end
    end
  end
  return phase and (phase .. ": " .. msg) or msg
end

---------------------------------------------------------------- reporting

local COLORS = { ok = "\27[32m", FAIL = "\27[31m", skip = "\27[33m" }
local TAGS = { ok = "ok  ", fail = "FAIL", skip = "skip" }

local function say(s)
  if host.write then host.write(s .. "\n") return end
  io.stdout:write(s, "\n")
  io.stdout:flush()
end

local run -- per-run results: { results = {}, files = {}, color = bool, ... }

local function report(file, name, status, secs, msg, line)
  local r = { file = file, name = name, status = status, time = secs or 0, msg = msg, line = line }
  run.results[#run.results + 1] = r
  local tag = TAGS[status]
  if run.color then tag = COLORS[tag:gsub(" ", "")] .. tag .. "\27[0m" end
  local suffix = status == "skip" and "" or (" (%d ms)"):format(math.floor(r.time * 1000 + 0.5))
  say(tag .. " " .. name .. suffix)
end

---------------------------------------------------------------- execution

local function run_test(t, chain, file)
  local t0 = now()
  local failure
  state.test = { finally = {} }
  A.last_failure = nil
  local function try(phase, fn)
    local ok, err, tb = call(fn, run.timeout)
    if not ok and not failure then failure = describe_err(phase, err, tb, file, run.timeout) end
    return ok
  end
  local ready = 0 -- blocks whose before_each hooks all succeeded
  for i, b in ipairs(chain) do
    local good = true
    for _, h in ipairs(b.before_each) do
      if not try("before_each", h) then good = false break end
    end
    if not good then break end
    ready = i
  end
  if ready == #chain then try(nil, t.fn) end
  local fin = state.test.finally
  for i = #fin, 1, -1 do try("finally", fin[i]) end
  for i = ready, 1, -1 do
    for _, h in ipairs(chain[i].after_each) do try("after_each", h) end
  end
  if #M.reset_hooks > 0 then
    try("reset", function() for _, h in ipairs(M.reset_hooks) do h() end end)
  end
  state.test = nil
  report(file, t.full, failure and "fail" or "ok", now() - t0, failure, t.line)
end

local function selected(t)
  if #run.filters == 0 then return true end
  for _, pat in ipairs(run.filters) do
    if t.full:find(pat) then return true end
  end
  return false
end

-- Counts selected tests under b (all, and those that will actually run).
local function count(b)
  local nsel, nrun = 0, 0
  for _, c in ipairs(b.children) do
    if c.kind == "block" then
      local s, r = count(c)
      nsel, nrun = nsel + s, nrun + r
    elseif selected(c) then
      c.selected = true
      nsel = nsel + 1
      if not c.pending then nrun = nrun + 1 end
    end
  end
  b.nsel, b.nrun = nsel, nrun
  return nsel, nrun
end

-- Runs a block's selected tests. setup runs only when a test will run, and
-- a failing setup fails every test below it without running them.
local function run_block(b, chain, file, inherited)
  if b.nsel == 0 then return end
  chain[#chain + 1] = b
  local failure = inherited
  local did_setup = false
  if not failure and b.nrun > 0 then
    did_setup = true
    for _, h in ipairs(b.setup) do
      local ok, err, tb = call(h, run.timeout)
      if not ok then failure = describe_err("setup", err, tb, file, run.timeout) break end
    end
  end
  for _, c in ipairs(b.children) do
    if c.kind == "block" then
      run_block(c, chain, file, failure)
    elseif c.selected and c.pending then
      report(file, c.full, "skip", 0, nil, c.line)
    elseif c.selected and failure then
      report(file, c.full, "fail", 0, failure, c.line)
    elseif c.selected then
      run_test(c, chain, file)
    end
  end
  if did_setup then
    for _, h in ipairs(b.teardown) do
      local ok, err, tb = call(h, run.timeout)
      if not ok then
        -- The block's tests already reported; the teardown counts as its own failure.
        report(file, full_name(b, "teardown"), "fail", 0,
          describe_err("teardown", err, tb, file, run.timeout), b.line)
      end
    end
  end
  chain[#chain] = nil
end

local function make_env()
  local env = {}
  for k, v in pairs(host.globals or {}) do env[k] = v end
  for k, v in pairs(DSL) do env[k] = v end
  env.assert = A.assert
  return setmetatable(env, { __index = _G })
end

-- Loads a spec file (collecting its describe/it tree) and runs it. A file
-- that fails to compile or to load is reported as `file:line: message`.
local function run_file(file)
  local root = new_block(nil, nil, file)
  root.kind = "block"
  local chunk, err = loadfile(file)
  if chunk then
    setfenv(chunk, make_env())
    state.block, state.running = root, false
    local ok, lerr = xpcall(chunk, function(e)
      local loc = spec_loc(debug.traceback("", 2), file)
      e = type(e) == "string" and e or A.pretty(e)
      if loc and e:sub(1, #loc + 1) ~= loc .. ":" then e = loc .. ": " .. e end
      return e
    end)
    state.block = nil
    if not ok then chunk, err = nil, lerr end
  end
  if not chunk then
    err = tostring(err)
    say(err)
    run.load_errors[#run.load_errors + 1] = { file = file, msg = err }
    return
  end
  count(root)
  A.current_file = file
  state.running = true
  run_block(root, {}, file, nil)
  state.running = false
  A.current_file = nil
end

---------------------------------------------------------------- files, args

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function expand(dir)
  if host.expand then return host.expand(dir .. "/**/*_spec.lua") or {} end
  local files = {}
  local p = io.popen("find " .. shell_quote(dir) .. " -name '*_spec.lua' 2>/dev/null | sort")
  if p then
    for line in p:lines() do files[#files + 1] = line end
    p:close()
  end
  return files
end

local function parse_args(args)
  local o = { filters = {}, paths = {}, timeout = 5 }
  local i = 1
  while args[i] ~= nil do
    local a = args[i]
    local name, val = a:match("^(%-%-[%w-]+)=(.*)$")
    if not name then name = a end
    local function value()
      if val then return val end
      i = i + 1
      if args[i] == nil then return nil, a .. " needs a value" end
      return args[i]
    end
    if name == "--filter" or name == "--junit" or name == "--timeout" then
      local v, err = value()
      if not v then return nil, err end
      if name == "--filter" then
        if not pcall(string.find, "", v) then return nil, "bad --filter pattern: " .. v end
        o.filters[#o.filters + 1] = v
      elseif name == "--junit" then
        o.junit = v
      else
        o.timeout = tonumber(v)
        if not o.timeout or o.timeout < 0 then return nil, "bad --timeout: " .. v end
      end
    elseif name == "-h" or name == "--help" then
      return nil, USAGE
    elseif a:sub(1, 1) == "-" then
      return nil, "unknown option " .. a
    else
      o.paths[#o.paths + 1] = a
    end
    i = i + 1
  end
  return o
end

---------------------------------------------------------------- junit

local XMLESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }

-- XML 1.0 has no escape for control characters and must be valid UTF-8:
-- replace what cannot be represented so CI parsers accept the file.
local function xml(s)
  s = tostring(s):gsub("[%z\1-\8\11\12\14-\31\127]", "?")
  s = s:gsub("[\128-\255]+", function(run_)
    local i, n = 1, #run_
    while i <= n do
      local c = run_:byte(i)
      local len = c >= 0xF0 and c < 0xF5 and 4 or c >= 0xE0 and 3 or c >= 0xC2 and c < 0xE0 and 2 or 0
      if len == 0 or i + len - 1 > n or run_:sub(i + 1, i + len - 1):find("[^\128-\191]") then
        return ("?"):rep(n)
      end
      i = i + len
    end
    return run_
  end)
  return (s:gsub("[&<>\"']", XMLESC))
end

local function write_junit(path)
  local files, by_file = {}, {}
  local function suite(f)
    if not by_file[f] then
      by_file[f] = { name = f, cases = {}, tests = 0, failures = 0, errors = 0, skipped = 0, time = 0 }
      files[#files + 1] = by_file[f]
    end
    return by_file[f]
  end
  for _, r in ipairs(run.results) do
    local s = suite(r.file)
    s.tests, s.time = s.tests + 1, s.time + r.time
    local attrs = ('classname="%s" name="%s" time="%.3f"'):format(xml(r.file), xml(r.name), r.time)
    if r.status == "ok" then
      s.cases[#s.cases + 1] = "    <testcase " .. attrs .. "/>"
    elseif r.status == "skip" then
      s.skipped = s.skipped + 1
      s.cases[#s.cases + 1] = "    <testcase " .. attrs .. "><skipped/></testcase>"
    else
      s.failures = s.failures + 1
      s.cases[#s.cases + 1] = ('    <testcase %s><failure message="%s" type="failure">%s</failure></testcase>')
        :format(attrs, xml(r.msg:match("^[^\n]*")), xml(r.msg))
    end
  end
  for _, e in ipairs(run.load_errors) do
    local s = suite(e.file)
    s.tests, s.errors = s.tests + 1, s.errors + 1
    s.cases[#s.cases + 1] = ('    <testcase classname="%s" name="(load)" time="0.000"><error message="%s" type="load">%s</error></testcase>')
      :format(xml(e.file), xml(e.msg:match("^[^\n]*")), xml(e.msg))
  end
  local out = { '<?xml version="1.0" encoding="UTF-8"?>' }
  local tot = { tests = 0, failures = 0, errors = 0, skipped = 0, time = 0 }
  for _, s in ipairs(files) do
    for k in pairs(tot) do tot[k] = tot[k] + s[k] end
  end
  out[#out + 1] = ('<testsuites name="sluice test" tests="%d" failures="%d" errors="%d" skipped="%d" time="%.3f">')
    :format(tot.tests, tot.failures, tot.errors, tot.skipped, tot.time)
  for _, s in ipairs(files) do
    out[#out + 1] = ('  <testsuite name="%s" tests="%d" failures="%d" errors="%d" skipped="%d" time="%.3f">')
      :format(xml(s.name), s.tests, s.failures, s.errors, s.skipped, s.time)
    for _, c in ipairs(s.cases) do out[#out + 1] = c end
    out[#out + 1] = "  </testsuite>"
  end
  out[#out + 1] = "</testsuites>\n"
  local f, err = io.open(path, "w")
  if not f then return nil, err end
  local ok, werr = f:write(table.concat(out, "\n"))
  f:close()
  if not ok then return nil, werr end
  return true
end

---------------------------------------------------------------- main

-- Entry point for `sluice test`: args are the CLI arguments after "test",
-- h the host hooks (see docs/testing.md). Returns the exit status.
function M.main(args, h)
  host = h or {}
  local opts, err = parse_args(args or {})
  if not opts then
    io.stderr:write(err, "\n")
    return 2
  end
  local tty = host.isatty
  if type(tty) == "function" then tty = tty() end
  run = { results = {}, load_errors = {}, filters = opts.filters, timeout = opts.timeout,
    color = tty == true }

  local files = {}
  if #opts.paths == 0 then
    files = expand("tests")
  end
  for _, p in ipairs(opts.paths) do
    if p:match("%.lua$") then
      files[#files + 1] = p
    else
      local found = expand((p:gsub("/+$", "")))
      if #found == 0 then
        local msg = p .. ": no *_spec.lua files found"
        say(msg)
        run.load_errors[#run.load_errors + 1] = { file = p, msg = msg }
      end
      for _, f in ipairs(found) do files[#files + 1] = f end
    end
  end

  for _, f in ipairs(files) do run_file(f) end

  local passed, failed, skipped, failures = 0, 0, 0, {}
  for _, r in ipairs(run.results) do
    if r.status == "ok" then passed = passed + 1
    elseif r.status == "skip" then skipped = skipped + 1
    else failed = failed + 1; failures[#failures + 1] = r end
  end
  if #failures > 0 then
    say("")
    say("Failures:")
    for i, r in ipairs(failures) do
      say("")
      say(("%d) %s"):format(i, r.name))
      say("   " .. r.msg:gsub("\n", "\n   "))
    end
  end
  if #run.load_errors > 0 then
    say("")
    say(("%d spec file(s) did not load:"):format(#run.load_errors))
    for _, e in ipairs(run.load_errors) do say("   " .. e.msg:gsub("\n", "\n   ")) end
  end
  if opts.junit then
    local ok, jerr = write_junit(opts.junit)
    if not ok then
      say("cannot write junit file: " .. tostring(jerr))
      run.load_errors[#run.load_errors + 1] = { file = opts.junit, msg = tostring(jerr) }
    end
  end
  say("")
  say(("%d passed, %d failed"):format(passed, failed) .. (skipped > 0 and (", %d skipped"):format(skipped) or ""))
  if #run.load_errors > 0 then return 2 end
  return failed > 0 and 1 or 0
end

return M
