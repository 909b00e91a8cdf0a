-- spec_cli.lua: the command line of `sluice test` (busted's options, plus --timeout and --junit),
-- the `.busted` defaults file, and finding the spec files.
local M = {}

M.USAGE = [[
usage: sluice test [--config config.lua] [options] [paths...]

  paths                   spec files or directories (default: spec/, else tests/)
  -p, --pattern=PATTERN   Lua pattern a file's name must contain (default _spec; repeatable)
  --exclude-pattern=PAT   skip files whose name matches (repeatable)
  --filter=PATTERN        only tests whose full name matches (repeatable: any)
  --filter-out=PATTERN    skip tests whose full name matches (repeatable)
  -t, --tags=TAGS         only tests with one of these #tags (comma-separated)
  --exclude-tags=TAGS     skip tests with these #tags
  -o, --output=NAME       sluice (default), utfTerminal, plainTerminal, TAP, json, junit
  -Xoutput FILE           junit: write the report to FILE instead of stdout
  --junit=FILE            also write a JUnit XML report to FILE
  --timeout=SECONDS       time limit of each test and hook (default 5; 0 = none)
  --shuffle               run files and tests in random order (--shuffle-files, --shuffle-tests)
  --sort                  run files and tests sorted by name (--sort-files, --sort-tests)
  --seed=N                seed for --shuffle and randomize()
  --repeat=N              run the whole suite N times
  -m, --lpath=PATH        prepended to package.path (default ./src/?.lua;./src/?/?.lua;./src/?/init.lua)
  --cpath=PATH            prepended to package.cpath
  -e STATEMENT            run STATEMENT before the specs (repeatable)
  --helper=FILE           run FILE before the specs
  -l, --list              list the selected tests (file:line: name) instead of running them
  -v, --verbose           tracebacks and server logs of passing tests too
  --suppress-pending      do not report pending tests
  --no-keep-going         stop after the first failure
  --lazy                  setup/teardown mean lazy_setup/lazy_teardown
  --no-recursive          do not descend into subdirectories
  -r, --run=NAME          use task NAME of the .busted file
  -f, --config-file=FILE  read defaults from FILE instead of ./.busted
  --lang=LANG             luassert's message language (default en)
  --version, -h/--help
exit status: 0 when at least one test ran and none failed; 1 when a test failed; 2 when no
spec file was found, a file did not load, no test was selected or ran, or on a usage error]]

-- name -> { key, kind, default }; kinds: flag, value, number, multi (repeatable), list (comma-split)
local SPECS = {
  { "-p", "--pattern", key = "pattern", kind = "multi" },
  { "--exclude-pattern", key = "exclude-pattern", kind = "multi" },
  { "--filter", key = "filter", kind = "multi" },
  { "--filter-out", key = "filter-out", kind = "multi" },
  { "-t", "--tags", key = "tags", kind = "list" },
  { "--exclude-tags", key = "exclude-tags", kind = "list" },
  { "-o", "--output", key = "output", kind = "value" },
  { "-Xoutput", key = "Xoutput", kind = "list" },
  { "-Xhelper", key = "Xhelper", kind = "list" },
  { "--junit", key = "junit", kind = "value" },
  { "--timeout", key = "timeout", kind = "number" },
  { "--shuffle", key = "shuffle", kind = "flag" },
  { "--shuffle-files", key = "shuffle-files", kind = "flag" },
  { "--shuffle-tests", key = "shuffle-tests", kind = "flag" },
  { "--sort", key = "sort", kind = "flag" },
  { "--sort-files", key = "sort-files", kind = "flag" },
  { "--sort-tests", key = "sort-tests", kind = "flag" },
  { "--seed", key = "seed", kind = "number" },
  { "--repeat", key = "repeat", kind = "number" },
  { "-m", "--lpath", key = "lpath", kind = "value" },
  { "--cpath", key = "cpath", kind = "value" },
  { "-e", key = "e", kind = "multi" },
  { "--helper", key = "helper", kind = "value" },
  { "-l", "--list", key = "list", kind = "flag" },
  { "-v", "--verbose", key = "verbose", kind = "flag" },
  { "--suppress-pending", key = "suppress-pending", kind = "flag" },
  { "--defer-print", key = "defer-print", kind = "flag" },
  { "-k", "--keep-going", key = "keep-going", kind = "flag" },
  { "--lazy", key = "lazy", kind = "flag" },
  { "--auto-insulate", key = "auto-insulate", kind = "flag" },
  { "-R", "--recursive", key = "recursive", kind = "flag" },
  { "-r", "--run", key = "run", kind = "value" },
  { "-f", "--config-file", key = "config-file", kind = "value" },
  { "--lang", key = "lang", kind = "value" },
  { "--loaders", key = "loaders", kind = "value" },
  { "--ignore-lua", key = "ignore-lua", kind = "flag" },
  { "--version", key = "version", kind = "flag" },
  { "-h", "--help", key = "help", kind = "flag" },
}

-- busted options sluice does not have, with the reason
local UNSUPPORTED = {
  ["-c"] = "is sluice's --config (busted's --coverage is not supported)",
  ["--coverage"] = "is not supported",
  ["-C"] = "is not supported: run sluice test from the directory (config paths are relative to it)",
  ["--directory"] = "is not supported: run sluice test from the directory",
  ["--lua"] = "is not supported: specs run in the sluice runtime's LuaJIT",
  ["-s"] = "is not supported", ["--enable-sound"] = "is not supported",
}

local BY_NAME = {}
for _, s in ipairs(SPECS) do
  for _, n in ipairs(s) do BY_NAME[n] = s end
end

M.DEFAULTS = {
  pattern = { "_spec" }, ["exclude-pattern"] = {}, filter = {}, ["filter-out"] = {},
  tags = {}, ["exclude-tags"] = {}, output = "sluice", Xoutput = {}, Xhelper = {}, timeout = 5,
  ["repeat"] = 1, lpath = "./src/?.lua;./src/?/?.lua;./src/?/init.lua", cpath = "./csrc/?.so;./csrc/?/?.so",
  e = {}, ["keep-going"] = true, recursive = true, lang = "en",
}

local function split(s, sep)
  local out = {}
  for part in tostring(s):gmatch("[^" .. sep .. "]+") do
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

local function aslist(v, comma)
  if v == nil then return nil end
  local list = type(v) == "table" and v or { v }
  if not comma then return list end
  local out = {}
  for _, x in ipairs(list) do
    for _, y in ipairs(split(x, ",")) do out[#out + 1] = y end
  end
  return out
end

-- Parses argv into the options busted would have (keys are busted's long option names, ROOT
-- the paths); returns opts or nil, message.
function M.parse(args)
  local cli, roots = {}, {}
  local i = 1
  while args[i] ~= nil do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do roots[#roots + 1] = args[j] end
      break
    end
    if a:sub(1, 1) ~= "-" or a == "-" then
      roots[#roots + 1] = a
    else
      local name, val = a:match("^(%-%-[%w-]+)=(.*)$")
      name = name or a
      local negate = false
      local spec = BY_NAME[name]
      if not spec and name:match("^%-%-no%-") then
        spec = BY_NAME["--" .. name:sub(6)]
        negate = spec ~= nil and spec.kind == "flag"
        if not negate then spec = nil end
      end
      if not spec then
        if UNSUPPORTED[name] then return nil, name .. " " .. UNSUPPORTED[name] end
        return nil, "unknown option " .. a .. " (sluice test --help lists the options)"
      end
      if spec.kind == "flag" then
        if val then return nil, name .. " takes no value" end
        cli[spec.key] = not negate
      else
        if not val then
          i = i + 1
          val = args[i]
          if val == nil then return nil, name .. " needs a value" end
        end
        if spec.kind == "number" then
          local n = tonumber(val)
          if not n then return nil, ("%s needs a number, got %q"):format(name, val) end
          cli[spec.key] = n
        elseif spec.kind == "value" then
          if spec.key == "lpath" or spec.key == "cpath" then
            cli[spec.key] = cli[spec.key] and (cli[spec.key] .. ";" .. val) or val
          else
            cli[spec.key] = val
          end
        else
          local list = cli[spec.key] or {}
          local vals = spec.kind == "list" and split(val, ",") or { val }
          for _, v in ipairs(vals) do list[#list + 1] = v end
          cli[spec.key] = list
        end
      end
    end
    i = i + 1
  end
  if #roots > 0 then cli.ROOT = roots end
  return cli
end

-- Loads the .busted file (or -f FILE) and merges: defaults < _all < task (-r) or default < CLI.
function M.configure(cli)
  local path, explicit = cli["config-file"], cli["config-file"] ~= nil
  path = path or ".busted"
  local conf = {}
  local chunk, err = loadfile(path)
  if not chunk then
    local missing = err and err:find("cannot open", 1, true)
    if explicit or not missing then return nil, ("cannot load %s: %s"):format(path, tostring(err)) end
  else
    local ok, t = pcall(chunk)
    if not ok then return nil, ("%s: %s"):format(path, tostring(t)) end
    if type(t) ~= "table" then return nil, path .. " does not return a table" end
    local task = cli.run
    local sel
    if task then
      sel = t[task]
      if type(sel) ~= "table" then return nil, ("%s: task %q not found, or not a table"):format(path, task) end
    else
      sel = type(t.default) == "table" and t.default or {}
    end
    for k, v in pairs(type(t._all) == "table" and t._all or {}) do conf[k] = v end
    for k, v in pairs(sel) do conf[k] = v end
    conf.source = path
  end
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  local unknown = {}
  for k, v in pairs(conf) do
    if k ~= "source" then
      if k ~= "ROOT" and not BY_NAME["--" .. k] and not BY_NAME["-" .. k] then unknown[#unknown + 1] = k end
      o[k] = v
    end
  end
  for k, v in pairs(cli) do o[k] = v end
  table.sort(unknown)
  o.unknown_keys = #unknown > 0 and unknown or nil
  o.busted_file = conf.source
  -- normalize the forms a .busted file may use (a string where a list is meant)
  o.ROOT = aslist(o.ROOT)
  o.pattern = aslist(o.pattern)
  o["exclude-pattern"] = aslist(o["exclude-pattern"])
  o.filter = aslist(o.filter)
  o["filter-out"] = aslist(o["filter-out"])
  o.tags = aslist(o.tags, true)
  o["exclude-tags"] = aslist(o["exclude-tags"], true)
  o.e = aslist(o.e)
  o.Xoutput = aslist(o.Xoutput, true)
  o.Xhelper = aslist(o.Xhelper, true)
  if o.shuffle ~= nil then
    if o["shuffle-files"] == nil then o["shuffle-files"] = o.shuffle end
    if o["shuffle-tests"] == nil then o["shuffle-tests"] = o.shuffle end
  end
  if o.sort ~= nil then
    if o["sort-files"] == nil then o["sort-files"] = o.sort end
    if o["sort-tests"] == nil then o["sort-tests"] = o.sort end
  end
  for _, p in ipairs(o.filter) do
    if not pcall(string.find, "", p) then return nil, "bad --filter pattern: " .. p end
  end
  for _, p in ipairs(o["filter-out"]) do
    if not pcall(string.find, "", p) then return nil, "bad --filter-out pattern: " .. p end
  end
  for _, p in ipairs(o.pattern) do
    if not pcall(string.find, "", p) then return nil, "bad --pattern: " .. p end
  end
  for _, x in ipairs(o["exclude-tags"]) do
    for _, t in ipairs(o.tags) do
      if x == t then return nil, "cannot use --tags and --exclude-tags for the same tag: " .. t end
    end
  end
  if type(o.timeout) ~= "number" or o.timeout < 0 then return nil, "bad --timeout: " .. tostring(o.timeout) end
  if type(o["repeat"]) ~= "number" or o["repeat"] < 1 or o["repeat"] % 1 ~= 0 then
    return nil, "bad --repeat: " .. tostring(o["repeat"]) .. " (a whole number >= 1)"
  end
  return o
end

---------------------------------------------------------------- files

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- "file", "dir" or nil, why (does not exist, cannot be read), without lfs.
local function kind(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local _, _, code = f:read(1)
  f:close()
  return code == 21 and "dir" or "file" -- EISDIR
end
M.kind = kind

local function matches_any(name, patterns)
  for _, p in ipairs(patterns) do
    if p ~= "" and name:find(p) then return true end
  end
  return false
end

-- The spec files under dir: *.lua files whose name matches a pattern and no exclude pattern,
-- not hidden, sorted.
local function scan(dir, o)
  local depth = o.recursive and "" or " -maxdepth 1"
  local p = io.popen("find -L " .. shell_quote(dir) .. depth .. " -type f -name '*.lua' 2>/dev/null")
  local files = {}
  if not p then return files end
  for line in p:lines() do
    local rel = line:sub(#dir + 1)
    local base = line:match("([^/]+)$")
    if not rel:find("/%.") and matches_any(base, o.pattern) and not matches_any(base, o["exclude-pattern"]) then
      files[#files + 1] = line
    end
  end
  p:close()
  table.sort(files)
  return files
end

local function pattern_desc(o)
  if #o.pattern == 1 and o.pattern[1] == "_spec" then return "*_spec.lua files" end
  return ".lua files matching " .. table.concat(o.pattern, " or ")
end

-- Returns the files to run and a list of problems ({ file =, msg = }), each a one-line reason.
function M.find_files(o)
  local roots, problems, files = o.ROOT, {}, {}
  if not roots or #roots == 0 then
    if kind("spec") == "dir" then roots = { "spec" }
    elseif kind("tests") == "dir" then roots = { "tests" }
    else
      problems[1] = { file = ".", msg = "no spec files: neither spec/ nor tests/ exists here (give the spec files or directories to run)" }
      return files, problems
    end
  end
  local seen = {}
  for _, root in ipairs(roots) do
    local k, why = kind(root)
    if k == "file" then
      if not seen[root] then files[#files + 1] = root; seen[root] = true end
    elseif k == "dir" then
      local dir = root:gsub("/+$", "")
      if dir == "" then dir = "/" end
      local found = scan(dir, o)
      if #found == 0 then
        problems[#problems + 1] = { file = root, msg = ("%s: no %s found"):format(root, pattern_desc(o)) }
      end
      for _, f in ipairs(found) do
        if not seen[f] then files[#files + 1] = f; seen[f] = true end
      end
    else
      problems[#problems + 1] = { file = root, msg = why or (root .. ": No such file or directory") }
    end
  end
  return files, problems
end

return M
