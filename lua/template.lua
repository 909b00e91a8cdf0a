-- template: the HTML templates behind app.render. A template is text with three tags:
--   <%= expr %>   the value, HTML-escaped (nil prints nothing)
--   <%- expr %>   the value as is (for HTML you built or trust, e.g. a rendered partial)
--   <% code %>    Lua code: <% for _, p in ipairs(posts) do %> ... <% end %>
-- "-%>" also eats the newline right after the tag; "<%%" is a literal "<%". The data table's
-- fields are the template's variables (then the helpers render and escape, then the globals).
-- Each file is compiled once into a Lua function and cached in the state (a reload starts a
-- new cache); error messages name the template's file and line.
local M = {}

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

-- escape(v) -> v as text safe in HTML content and in quoted attributes; nil -> "".
function M.escape(v)
  if v == nil then return "" end
  return (tostring(v):gsub("[&<>\"']", ESC))
end

local function raw(v)
  if v == nil then return "" end
  return tostring(v)
end

-- compile(source, chunkname) -> a function(data, helpers) -> string, or nil, "file:line: message".
-- Error messages, at compile time and while rendering, carry the template's line numbers: the
-- generated Lua keeps the template's line breaks, and `lines` maps the few it adds back.
function M.compile(src, chunkname)
  local code, pos, n = { "return function(_esc, _raw) local _b, _n = {}, 0 " }, 1, #src
  local gl, lines = 1, { 1 }           -- generated line -> template line
  local function line(at) local _, k = src:sub(1, at - 1):gsub("\n", ""); return k + 1 end
  local function emit(piece, tline)    -- piece's newlines follow the template's from tline on
    code[#code + 1] = piece
    for _ in piece:gmatch("\n") do
      gl = gl + 1
      tline = tline + 1
      lines[gl] = tline
    end
  end
  local function text(a, b)
    local s = src:sub(a, b)
    if s ~= "" then emit(("_n = _n + 1 _b[_n] = %q "):format(s), line(a)) end
  end
  while pos <= n do
    local open = src:find("<%", pos, true)
    if not open then text(pos, n); break end
    if src:sub(open + 2, open + 2) == "%" then         -- "<%%": a literal "<%"
      text(pos, open + 1)
      pos = open + 3
    else
      text(pos, open - 1)
      local close = src:find("%>", open + 2, true)
      if not close then
        return nil, ("%s:%d: unclosed <%% (a %%> is missing)"):format(chunkname, line(open))
      end
      local kind = src:sub(open + 2, open + 2)
      local from = (kind == "=" or kind == "-") and open + 3 or open + 2
      local trim = src:sub(close - 1, close - 1) == "-" and close - 1 >= from
      local body = src:sub(from, trim and close - 2 or close - 1)
      if kind == "=" or kind == "-" then
        if not body:match("%S") then
          return nil, ("%s:%d: empty <%%%s %%> (put an expression in it)"):format(chunkname, line(open), kind)
        end
        emit(("_n = _n + 1 _b[_n] = %s(%s) "):format(kind == "=" and "_esc" or "_raw", body), line(open))
      else
        emit(body, line(from))
        -- a "--" comment would swallow what follows on the generated line: end it
        emit(body:find("--", 1, true) and "\n" or " ", line(close))
        lines[gl] = line(close)
      end
      pos = close + 2
      if trim and src:sub(pos, pos) == "\n" then      -- "-%>": the newline is not output
        emit("\n", line(pos))
        pos = pos + 1
      end
    end
  end
  emit(" return table.concat(_b) end", 1)
  local function fix(msg)              -- "file:GENLINE:" -> "file:LINE:"
    msg = tostring(msg)
    local at = msg:find(chunkname .. ":", 1, true)
    if not at then return msg end
    local after = at + #chunkname + 1
    local l = msg:match("^(%d+)", after)
    if not l then return msg end
    return msg:sub(1, after - 1) .. (lines[tonumber(l)] or l) .. msg:sub(after + #l)
  end
  local factory, err = loadstring(table.concat(code), "@" .. chunkname)
  if not factory then return nil, fix(err) end
  return function(data, helpers)
    -- a fresh closure per call: its environment is this call's data, so a template that
    -- yields (a query in it) cannot see another request's variables
    local fn = factory()
    setfenv(fn, setmetatable({}, { __index = function(_, k)
      local v = data[k]
      if v ~= nil then return v end
      v = helpers[k]
      if v ~= nil then return v end
      return _G[k]
    end }))
    local ok, res = pcall(fn, M.escape, raw)
    if not ok then error(type(res) == "string" and fix(res) or res, 0) end
    return res
  end
end

local cache = {}   -- [path] = compiled function: once per template per Lua state

-- path(dir, name) -> the file of template `name` ("index", "admin/users", "mail.txt"), or nil, why.
function M.path(dir, name)
  if type(name) ~= "string" or name == "" or name:sub(1, 1) == "/" or not name:match("^[%w_%-%./]+$") then
    return nil, "a template name is a relative path of letters, digits, _ - . and / (got " .. tostring(name) .. ")"
  end
  for seg in name:gmatch("[^/]+") do
    if seg == ".." or seg == "." then return nil, "a template name may not contain \".\" or \"..\" segments: " .. name end
  end
  if not name:match("%.[%w]+$") then name = name .. ".html" end
  return dir .. "/" .. name
end

-- render(dir, name, data) -> string; raises "file:line: message" for template errors and a
-- message naming the file looked for when there is none.
function M.render(dir, name, data)
  local path, perr = M.path(dir, name)
  -- messages name "templates/<file>": full paths longer than 60 bytes would be cut by Lua
  if not path then error(perr, 0) end
  local fn = cache[path]
  if not fn then
    local f = io.open(path, "rb")
    if not f then error(("no template %q (looked for %s; templates live in the templates/ directory next to config.lua)"):format(name, path), 0) end
    local src = f:read("*a")
    f:close()
    local err
    fn, err = M.compile(src, (dir:match("[^/]+$") or "templates") .. path:sub(#dir + 1))
    if not fn then error(err, 0) end
    cache[path] = fn
  end
  local helpers = {
    escape = M.escape,
    render = function(n, d) return M.render(dir, n, d or data) end,   -- partials: <%- render("row", r) %>
  }
  return fn(data or {}, helpers)
end

-- For tests: forget compiled templates.
function M.clear() cache = {} end

return M
