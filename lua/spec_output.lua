-- spec_output.lua: what `sluice test -o NAME` prints. `sluice` (the default) is a line per test
-- and the summary line `N passed, N failed`; utfTerminal, plainTerminal, TAP, json and junit
-- follow busted's handlers of those names.
--
-- A handler gets: start(run, runs), test(r), load_error(e), reason(msg), finish(sum). A result r
-- is { file, line, name ("a > b > c"), bname ("a b c", busted's full name), status ("success",
-- "failure", "error", "pending"), time (s), msg, log }.
local M = {}

local XMLESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }

-- XML 1.0 has no escape for control characters and must be valid UTF-8: replace what cannot be
-- represented so CI parsers accept the file.
local function xml(s)
  s = tostring(s):gsub("[%z\1-\8\11\12\14-\31\127]", "?")
  s = s:gsub("[\128-\255]+", function(seq)
    local i, n = 1, #seq
    while i <= n do
      local c = seq:byte(i)
      local len = c >= 0xF0 and c < 0xF5 and 4 or c >= 0xE0 and 3 or c >= 0xC2 and c < 0xE0 and 2 or 0
      if len == 0 or i + len - 1 > n or seq:sub(i + 1, i + len - 1):find("[^\128-\191]") then
        return ("?"):rep(n)
      end
      i = i + len
    end
    return seq
  end)
  return (s:gsub("[&<>\"']", XMLESC))
end

local function first_line(s) return (tostring(s or ""):match("^[^\n]*")) end

-- One <testsuite> per spec file, load errors as <error>; returns the document.
function M.junit(results, load_errors)
  local files, by_file = {}, {}
  local function suite(f)
    if not by_file[f] then
      by_file[f] = { name = f, cases = {}, tests = 0, failures = 0, errors = 0, skipped = 0, time = 0 }
      files[#files + 1] = by_file[f]
    end
    return by_file[f]
  end
  for _, r in ipairs(results) do
    local s = suite(r.file)
    s.tests, s.time = s.tests + 1, s.time + r.time
    local attrs = ('classname="%s" name="%s" time="%.3f"'):format(xml(r.file), xml(r.name), r.time)
    if r.status == "success" then
      s.cases[#s.cases + 1] = "    <testcase " .. attrs .. "/>"
    elseif r.status == "pending" then
      s.skipped = s.skipped + 1
      s.cases[#s.cases + 1] = "    <testcase " .. attrs .. "><skipped/></testcase>"
    else
      local tag = r.status == "error" and "error" or "failure"
      if tag == "error" then s.errors = s.errors + 1 else s.failures = s.failures + 1 end
      s.cases[#s.cases + 1] = ('    <testcase %s><%s message="%s" type="%s">%s</%s></testcase>')
        :format(attrs, tag, xml(first_line(r.msg)), tag, xml(r.msg or ""), tag)
    end
  end
  for _, e in ipairs(load_errors) do
    local s = suite(e.file)
    s.tests, s.errors = s.tests + 1, s.errors + 1
    s.cases[#s.cases + 1] = ('    <testcase classname="%s" name="(load)" time="0.000"><error message="%s" type="load">%s</error></testcase>')
      :format(xml(e.file), xml(first_line(e.msg)), xml(e.msg))
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
  return table.concat(out, "\n")
end

local function indent(s, pre) return pre .. tostring(s):gsub("\n", "\n" .. pre) end

local function details(r, verbose)
  local msg = r.msg or ""
  if r.log and (r.status == "failure" or r.status == "error" or verbose) then
    msg = msg .. (msg ~= "" and "\n" or "") .. "server log during the test:\n" .. indent(r.log:gsub("\n$", ""), "  ")
  end
  return msg
end

---------------------------------------------------------------- sluice (default)

local COLORS = { ok = "\27[32m", FAIL = "\27[31m", skip = "\27[33m" }

function M.sluice(ctx)
  local say = ctx.say
  local failures, loads, reasons = {}, {}, {}
  local h = {}
  function h.start(run, runs)
    if runs > 1 then say(("--- run %d of %d"):format(run, runs)) end
  end
  function h.test(r)
    local tag = r.status == "success" and "ok  " or r.status == "pending" and "skip" or "FAIL"
    if r.status == "pending" and ctx.suppress_pending then return end
    if r.status == "failure" or r.status == "error" then failures[#failures + 1] = r end
    local shown = ctx.color and (COLORS[tag:gsub(" ", "")] .. tag .. "\27[0m") or tag
    local suffix
    if r.status == "pending" then
      suffix = (r.msg and r.msg ~= "") and (": " .. first_line(r.msg)) or ""
    else
      suffix = (" (%d ms)"):format(math.floor(r.time * 1000 + 0.5))
    end
    say(shown .. " " .. r.name .. suffix)
    if ctx.verbose and r.status == "success" and r.log then say(indent(r.log:gsub("\n$", ""), "     ")) end
  end
  function h.load_error(e)
    loads[#loads + 1] = e
    say(e.msg)
  end
  function h.reason(msg) reasons[#reasons + 1] = msg end
  function h.finish(sum)
    if #failures > 0 then
      say("")
      say("Failures:")
      for i, r in ipairs(failures) do
        say("")
        say(("%d) %s"):format(i, r.name))
        say(indent(details(r, ctx.verbose), "   "))
      end
    end
    if #loads > 0 then
      say("")
      say(("%d spec file(s) did not load:"):format(#loads))
      for _, e in ipairs(loads) do say(indent(e.msg, "   ")) end
    end
    if #reasons > 0 then
      say("")
      for _, m in ipairs(reasons) do say("sluice test: " .. m) end
    end
    say("")
    say(("%d passed, %d failed"):format(sum.passed, sum.failed)
      .. (sum.pending > 0 and (", %d skipped"):format(sum.pending) or ""))
  end
  return h
end

---------------------------------------------------------------- busted's terminal handlers

local function terminal(utf)
  return function(ctx)
    local say, write = ctx.say, ctx.write
    local function c(code, s) return ctx.color and (code .. s .. "\27[0m") or s end
    local dots = utf and { success = c("\27[32m", "●"), failure = c("\27[31m", "◼"), error = c("\27[35m", "✱"), pending = c("\27[33m", "◌") }
      or { success = "+", failure = "-", error = "*", pending = "." }
    local arrow = utf and "→" or "->"
    local pend, fails, errs, reasons = {}, {}, {}, {}
    local h = {}
    function h.start(run, runs)
      if runs > 1 then write(("\nRepeating all tests (run %d of %d) . . .\n\n"):format(run, runs)) end
    end
    function h.test(r)
      if r.status == "pending" and ctx.suppress_pending then return end
      write(dots[r.status])
      if r.status == "pending" then pend[#pend + 1] = r
      elseif r.status == "failure" then fails[#fails + 1] = r
      elseif r.status == "error" then errs[#errs + 1] = r end
    end
    function h.load_error(e)
      write(dots.error)
      errs[#errs + 1] = { file = e.file, line = 0, bname = e.file, msg = e.msg, status = "error", load = true }
    end
    function h.reason(msg) reasons[#reasons + 1] = msg end
    local function plural(n, one, many) return n == 1 and one or many end
    function h.finish(sum)
      write("\n")
      local secs = (("%.6f"):format(sum.duration):gsub("([0-9])0+$", "%1"))
      say(("%d %s / %d %s / %d %s / %d pending : %s seconds"):format(
        sum.successes, plural(sum.successes, "success", "successes"),
        sum.failures, plural(sum.failures, "failure", "failures"),
        sum.errors, plural(sum.errors, "error", "errors"), sum.pending, secs))
      for _, r in ipairs(pend) do
        say("")
        say(c("\27[33m", "Pending") .. " " .. arrow .. " " .. r.file .. " @ " .. r.line)
        say(r.bname)
        if r.msg and r.msg ~= "" then say(r.msg) end
      end
      local function describe(list, label, code)
        for _, r in ipairs(list) do
          say("")
          if r.load then
            say(c(code, label) .. " " .. arrow .. " " .. r.msg)
          else
            say(c(code, label) .. " " .. arrow .. " " .. r.file .. " @ " .. r.line)
            say(r.bname)
            say(details(r, ctx.verbose))
          end
        end
      end
      describe(fails, "Failure", "\27[31m")
      describe(errs, "Error", "\27[35m")
      for _, m in ipairs(reasons) do say(""); say("sluice test: " .. m) end
    end
    return h
  end
end
M.utfTerminal = terminal(true)
M.plainTerminal = terminal(false)

---------------------------------------------------------------- TAP

function M.TAP(ctx)
  local say = ctx.say
  local n = 0
  local h = {}
  function h.start() end
  local function failure(name, file, line, msg)
    say(("not ok %d - %s"):format(n, name))
    if file then say("# " .. file .. " @ " .. tostring(line)) end
    say("# Failure message: " .. tostring(msg):gsub("\n", "\n# "))
  end
  function h.test(r)
    if r.status == "pending" and ctx.suppress_pending then return end
    n = n + 1
    if r.status == "success" then say(("ok %d - %s"):format(n, r.bname))
    elseif r.status == "pending" then say(("ok %d - # SKIP %s"):format(n, (r.msg and r.msg ~= "") and r.msg or r.bname))
    else failure(r.bname, r.file, r.line, details(r, ctx.verbose)) end
  end
  function h.load_error(e)
    n = n + 1
    failure(e.file, nil, nil, e.msg)
  end
  function h.reason(msg) say("# sluice test: " .. msg) end
  function h.finish() say("1.." .. n) end
  return h
end

---------------------------------------------------------------- json

function M.json(ctx)
  local cjson = require "cjson"
  local lists = { successes = {}, failures = {}, errors = {}, pendings = {} }
  local KEY = { success = "successes", failure = "failures", error = "errors", pending = "pendings" }
  local h = {}
  function h.start() end
  local function entry(r, is_error)
    local trace = { short_src = r.file, currentline = r.line, source = "@" .. r.file }
    return { name = r.bname, message = r.msg, isError = is_error or nil, trace = trace,
      element = { name = r.leaf, descriptor = "it", trace = trace, duration = r.time } }
  end
  function h.test(r)
    if r.status == "pending" and ctx.suppress_pending then return end
    local list = lists[KEY[r.status]]
    list[#list + 1] = entry(r, r.status == "error")
  end
  function h.load_error(e)
    local list = lists.errors
    list[#list + 1] = { name = e.file, message = e.msg, isError = true,
      element = { name = e.file, descriptor = "file" } }
  end
  function h.reason(msg) ctx.err("sluice test: " .. msg) end
  function h.finish(sum)
    for k, v in pairs(lists) do
      if #v == 0 then lists[k] = cjson.empty_array or setmetatable({}, cjson.array_mt) end
    end
    lists.duration = sum.duration
    ctx.say(cjson.encode(lists))
  end
  return h
end

---------------------------------------------------------------- junit

function M.junit_handler(ctx)
  local results, loads = {}, {}
  local h = {}
  function h.start() end
  function h.test(r) results[#results + 1] = r end
  function h.load_error(e) loads[#loads + 1] = e end
  function h.reason(msg) ctx.err("sluice test: " .. msg) end
  function h.finish()
    local doc = M.junit(results, loads)
    local path = ctx.xoutput and ctx.xoutput[1]
    if path then
      local f, err = io.open(path, "w")
      if not f then ctx.err("sluice test: cannot write junit file: " .. tostring(err)); return false end
      f:write(doc)
      f:close()
    else
      ctx.write(doc)
    end
  end
  return h
end

M.handlers = {
  sluice = M.sluice, utfTerminal = M.utfTerminal, plainTerminal = M.plainTerminal,
  TAP = M.TAP, json = M.json, junit = M.junit_handler,
}

return M
