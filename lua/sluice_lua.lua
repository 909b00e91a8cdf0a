-- sluice_lua.lua: `sluice lua [FILE [args...]]`. FILE runs as a task on a live test instance of
-- the app (so `require "sluice"`, app.db and the spec helpers work); without FILE, a REPL on it.
local helpers = require "spec_helpers"
local T = require "sluice.testing"

-- The message and the frames of the user's code (not this file's, not xpcall's).
local function traceback(e)
  if type(e) ~= "string" then
    local mt = getmetatable(e)
    e = (mt and mt.__tostring) and tostring(e) or ("(error object is a %s value)"):format(type(e))
  end
  local lines = {}
  for l in debug.traceback(e, 2):gmatch("[^\n]+") do
    if not l:find("sluice_lua.lua:", 1, true) and not l:find("in function 'xpcall'", 1, true) then
      lines[#lines + 1] = l
    end
  end
  if lines[#lines] == "stack traceback:" then lines[#lines] = nil end
  return table.concat(lines, "\n")
end

local QUIET = {} -- error(): exit 1 without a message (how busted ends a failed run)

local function run_file(args)
  local path = args[1]
  local chunk, err = loadfile(path)
  if not chunk then
    io.stderr:write(err, "\n")
    return 1
  end
  local argt = { [0] = path }
  for i = 2, #args do argt[i - 1] = args[i] end
  arg = argt
  local ok, res = xpcall(function() return chunk(unpack(argt)) end, function(e)
    if e == nil then return QUIET end
    return traceback(e)
  end)
  io.stdout:flush()
  if not ok then
    if res ~= QUIET then io.stderr:write(res, "\n") end
    return 1
  end
  return type(res) == "number" and res or 0
end

-- Values as a REPL shows them: strings quoted, tables one level deep with keys sorted.
local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if type(v) ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if depth > 1 then return "{...}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) < type(b)
  end)
  local parts = {}
  for i, k in ipairs(keys) do
    if i > 30 then parts[#parts + 1] = ("... (%d more)"):format(#keys - 30) break end
    local ks = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k, 2) .. "]"
    parts[#parts + 1] = ks .. " = " .. show(v[k], depth + 1)
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- The instance keeps running while the REPL waits for input (T.readline yields the task).
local function repl()
  local env = setmetatable({}, { __index = _G })
  for k, v in pairs(helpers.globals()) do env[k] = v end
  local tty = T.isatty(0)
  io.stdout:write("sluice lua: a REPL on a test instance of the app (request, subscribe, clock, db, app;",
    " expressions print their values; Ctrl-D quits)\n")
  local pending = nil
  while true do
    if tty then io.stdout:write(pending and ">> " or "> ") io.stdout:flush() end
    local line = T.readline()
    if not line then break end
    local src = pending and (pending .. "\n" .. line) or line
    local chunk, err = loadstring("return " .. src, "=stdin")
    if not chunk then chunk, err = loadstring(src, "=stdin") end
    if not chunk and err:find("<eof>", 1, true) then
      pending = src                      -- an unfinished statement: read on
    else
      pending = nil
      if not chunk then
        io.stdout:write(err, "\n")
      else
        setfenv(chunk, env)
        local res = { xpcall(chunk, traceback) }
        if not res[1] then
          io.stdout:write(tostring(res[2]), "\n")
        elseif #res > 1 then
          local out = {}
          for i = 2, table.maxn(res) do out[#out + 1] = show(res[i]) end
          io.stdout:write(table.concat(out, "\t"), "\n")
        end
      end
    end
    io.stdout:flush()
  end
  return 0
end

return function(args)
  if args[1] and args[1] ~= "-" then return run_file(args) end
  return repl()
end
