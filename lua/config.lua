-- config: schema, defaults and validation of sluice's config.lua (pure Lua 5.1 / LuaJIT 2.1).
--
-- normalize(user, opts) returns a NEW table with every key present and its default filled
-- in, or nil plus an array of "file: key.path: message" strings, one per problem, sorted by
-- key path. The C side reads the normalized table with plain field access, so its shape
-- (documented in docs/config.md) is a contract: change it only together with the C readers.

local M = {}

local fmt, floor = string.format, math.floor

---------------------------------------------------------------------------------------------
-- Printing values and key paths for messages
---------------------------------------------------------------------------------------------

-- Hide the password of a URL: error messages end up in logs and terminals.
local function redact(s)
  return (s:gsub("^(%a[%w+.-]*://[^/@:]*):[^/@]*@", "%1:***@"))
end

local function quote(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return fmt("\\%d", c:byte())
  end)
  return '"' .. s .. '"'
end

local function numstr(n)
  if n ~= n then return "nan" end
  if n == floor(n) and n > -1e15 and n < 1e15 then return fmt("%d", n) end
  return fmt("%.14g", n)
end

-- "string \"ten\"", "number 3.5", "boolean true", "table", "nil".
local function show(v)
  local t = type(v)
  if t == "string" then
    local s = redact(v)
    if #s > 60 then s = s:sub(1, 57) .. "..." end
    return "string " .. quote(s)
  elseif t == "number" then
    return "number " .. numstr(v)
  elseif t == "boolean" then
    return "boolean " .. tostring(v)
  end
  return t
end

local function got(v) return " (got " .. show(v) .. ")" end

-- Key path components: strings and numbers. Order used for keys and for sorting errors:
-- numbers (numerically) before strings (bytewise) before anything else.
local TYPE_RANK = { number = 1, string = 2 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  local ra, rb = TYPE_RANK[ta] or 3, TYPE_RANK[tb] or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return tostring(a) < tostring(b) end
  return a < b
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, key_less)
  return ks
end

local function path_str(path)
  local out = {}
  for i, k in ipairs(path) do
    if type(k) == "number" then
      out[#out + 1] = "[" .. numstr(k) .. "]"
    elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then
      out[#out + 1] = (i > 1 and "." or "") .. k
    elseif type(k) == "string" then
      out[#out + 1] = "[" .. quote(k) .. "]"
    else
      out[#out + 1] = "[" .. tostring(k) .. "]"
    end
  end
  return table.concat(out)
end

local function child(path, k)
  local p = {}
  for i = 1, #path do p[i] = path[i] end
  p[#p + 1] = k
  return p
end

---------------------------------------------------------------------------------------------
-- "did you mean": optimal-string-alignment (restricted Damerau-Levenshtein) distance
---------------------------------------------------------------------------------------------

local function distance(a, b)
  local la, lb = #a, #b
  if math.abs(la - lb) > 2 then return 3 end
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    local ai = a:byte(i)
    for j = 1, lb do
      local bj = b:byte(j)
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ai == bj and 0 or 1))
      if i > 1 and j > 1 and ai == b:byte(j - 1) and a:byte(i - 1) == bj then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end

-- Closest known name (sorted list) to an unknown key, or nil.
local function suggest(k, names)
  if type(k) ~= "string" then return nil end
  local lk = k:lower()
  for _, n in ipairs(names) do
    if n:lower() == lk then return n end
  end
  local best, bestd = nil, 3
  for _, n in ipairs(names) do
    local dd = distance(lk, n:lower())
    if dd < bestd and dd < #k then best, bestd = n, dd end
  end
  return best
end

---------------------------------------------------------------------------------------------
-- Validation context
---------------------------------------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

function Ctx:err(path, msg)
  if self.origin then msg = msg .. " [from environment variable " .. self.origin .. "]" end
  self.errors[#self.errors + 1] = { path = path, msg = msg, seq = #self.errors + 1 }
end

local function dirname(file)
  local d = file:match("^(.*)/[^/]*$")
  if d == nil then return "" end
  if d == "" then return "/" end
  return d
end

-- Resolve a path from config.lua against the directory of config.lua, lexically:
-- "./" and "//" are folded, ".." is kept (symlinks make folding it wrong).
local function resolve(dir, p)
  if p:sub(1, 1) ~= "/" and dir ~= "" then p = dir .. "/" .. p end
  local abs = p:sub(1, 1) == "/"
  local parts = {}
  for seg in p:gmatch("[^/]+") do
    if seg ~= "." then parts[#parts + 1] = seg end
  end
  local s = table.concat(parts, "/")
  if abs then return "/" .. s end
  if s == "" then return "." end
  return s
end

---------------------------------------------------------------------------------------------
-- Field checkers: function(value, path, ctx) -> normalized value (nil after an error)
---------------------------------------------------------------------------------------------

local function is_int(v) return type(v) == "number" and v == v and v % 1 == 0 end

local function integer(lo, hi)
  local expect = "must be an integer " .. numstr(lo) .. ".." .. numstr(hi)
  return function(v, path, ctx)
    if not is_int(v) or v < lo or v > hi then ctx:err(path, expect .. got(v)); return nil end
    return v
  end
end

-- number(lo, hi, open): lo < v <= hi when open, else lo <= v <= hi. Fractions allowed.
local function number(lo, hi, open)
  local expect = open and ("must be a number > " .. numstr(lo) .. " and <= " .. numstr(hi))
                       or ("must be a number " .. numstr(lo) .. ".." .. numstr(hi))
  return function(v, path, ctx)
    if type(v) ~= "number" or v ~= v or v > hi or v < lo or (open and v == lo) then
      ctx:err(path, expect .. got(v)); return nil
    end
    return v
  end
end

local function boolean(v, path, ctx)
  if type(v) ~= "boolean" then ctx:err(path, "must be a boolean" .. got(v)); return nil end
  return v
end

local function enum(...)
  local list, set, shown = { ... }, {}, {}
  for i, s in ipairs(list) do set[s] = true; shown[i] = quote(s) end
  local expect = "must be one of " .. table.concat(shown, ", ")
  return function(v, path, ctx)
    if set[v] then return v end
    local hint = ""
    local s = type(v) == "string" and suggest(v, list)
    if s then hint = " (did you mean " .. quote(s) .. "?)" end
    ctx:err(path, expect .. got(v) .. hint)
    return nil
  end
end

local function nonempty_string(v, path, ctx)
  if type(v) ~= "string" or v == "" then ctx:err(path, "must be a non-empty string" .. got(v)); return nil end
  return v
end

-- A string the user may also leave empty to mean "unset" (os.getenv("X") or "").
local function optional_string(check)
  return function(v, path, ctx)
    if v == "" then return nil end
    return check(v, path, ctx)
  end
end

local function anything(v)
  local seen = {}
  local function copy(x)
    if type(x) ~= "table" then return x end
    if seen[x] then return seen[x] end
    local t = {}
    seen[x] = t
    for k, val in pairs(x) do t[k] = copy(val) end
    return t
  end
  return copy(v)
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

-- An array whose items pass `item`; `what` names the items for the message.
local function array(item, what)
  return function(v, path, ctx)
    if type(v) ~= "table" or not is_array(v) then
      ctx:err(path, "must be an array of " .. what .. got(v)); return nil
    end
    local out = {}
    for i = 1, #v do out[i] = item(v[i], child(path, i), ctx) end
    return out
  end
end

-- Field descriptor: check plus default (a value, or function(ctx) -> value, origin).
local function F(check, default, required) return { check = check, default = default, required = required } end

local function record(fields)
  local names = {}
  for k in pairs(fields) do names[#names + 1] = k end
  table.sort(names)
  return function(v, path, ctx)
    if type(v) ~= "table" then ctx:err(path, "must be a table" .. got(v)); return nil end
    for _, k in ipairs(sorted_keys(v)) do
      if fields[k] == nil then
        local s = suggest(k, names)
        ctx:err(child(path, k), "unknown key" .. (s and (" (did you mean " .. s .. "?)") or ""))
      end
    end
    local out = {}
    for _, name in ipairs(names) do
      local f, val, origin = fields[name], v[name], nil
      local p = child(path, name)
      if val == nil then
        if f.required then ctx:err(p, "missing required key (" .. f.required .. ")") end
        if type(f.default) == "function" then val, origin = f.default(ctx) else val = f.default end
      end
      if val ~= nil then
        ctx.origin = origin
        out[name] = f.check(val, p, ctx)
        ctx.origin = nil
      end
    end
    return out
  end
end

---------------------------------------------------------------------------------------------
-- Domain checkers
---------------------------------------------------------------------------------------------

local function host_check(v, path, ctx)
  if type(v) ~= "string" or not v:match("^[%w.:%-%[%]%%]+$") then
    ctx:err(path, 'must be a listen address such as "0.0.0.0", "::" or "127.0.0.1"' .. got(v)); return nil
  end
  return v
end

local function workers_check(v, path, ctx)
  if v == "auto" or (is_int(v) and v >= 1 and v <= 256) then return v end
  ctx:err(path, 'must be "auto" or an integer 1..256' .. got(v))
  return nil
end

local function scripts_check(v, path, ctx)
  local list = array(nonempty_string, "non-empty strings (script paths)")(v, path, ctx)
  if not list then return nil end
  local seen = {}
  for i = 1, #v do
    if list[i] then
      list[i] = resolve(ctx.dir, list[i])
      if seen[list[i]] then
        ctx:err(child(path, i), "duplicate of scripts[" .. seen[list[i]] .. "] (" .. quote(list[i]) .. ")")
      end
      seen[list[i]] = seen[list[i]] or i
    end
  end
  return list
end

local function file_check(v, path, ctx)
  if v == "" then return nil end
  local s = nonempty_string(v, path, ctx)
  return s and resolve(ctx.dir, s)
end

local function content_type(v, path, ctx)
  local s = nonempty_string(v, path, ctx)
  return s and s:lower()
end

local function url_path(v, path, ctx)
  if type(v) ~= "string" or v:sub(1, 1) ~= "/" or v:find("[%s?#]") then
    ctx:err(path, 'must be a path starting with "/" (no spaces, "?" or "#")' .. got(v)); return nil
  end
  return v
end

local function cidr_check(v, path, ctx)
  local ok = false
  if type(v) == "string" then
    local addr, bits = v:match("^([^/]+)/(%d+)$")
    if not addr and not v:find("/") then addr = v end
    local maxbits
    if addr and addr:match("^%d+%.%d+%.%d+%.%d+$") then
      maxbits = 32
      for o in addr:gmatch("%d+") do if tonumber(o) > 255 then maxbits = nil end end
    elseif addr and addr:find(":") and addr:match("^[%x:.]+$") then
      maxbits = 128
    end
    ok = maxbits ~= nil and (bits == nil or tonumber(bits) <= maxbits)
  end
  if not ok then
    ctx:err(path, 'must be an IPv4 or IPv6 address with optional /bits, e.g. "10.0.0.0/8"' .. got(v)); return nil
  end
  return v
end

-- A database URL is checked by the pool's own parser (core/pgurl.c through sluice.pgurl), so
-- `sluice check` rejects exactly what `sluice run` would, with the same message. Outside the
-- runtime (plain LuaJIT) only the scheme is checked.
local has_pgurl, pgurl = pcall(require, "sluice.pgurl")

local function pg_url(v, path, ctx)
  if type(v) ~= "string" or not (v:lower():match("^postgres://") or v:lower():match("^postgresql://")) then
    ctx:err(path, "must be a URL starting with postgres:// or postgresql://" .. got(v)); return nil
  end
  if has_pgurl then
    local ok, msg = pgurl.check(v)
    if not ok then ctx:err(path, msg); return nil end
  end
  return v
end

local function replicas_check(v, path, ctx)
  if type(v) == "string" then
    local list = {}
    for item in v:gmatch("[^,]+") do
      item = item:match("^%s*(.-)%s*$")
      if item ~= "" then list[#list + 1] = item end
    end
    v = list
  end
  return array(pg_url, "postgres:// URLs (or one comma-separated string)")(v, path, ctx)
end

-- http_client.proxy: a proxy URL curl takes (a bare host:port is an HTTP proxy)
local function proxy_url(v, path, ctx)
  if type(v) == "string" then
    local l = v:lower()
    local scheme, rest = l:match("^([%w+.-]+)://(.*)$")
    if not scheme then rest = l end
    local ok_scheme = not scheme or scheme == "http" or scheme == "https" or scheme == "socks4" or scheme == "socks4a"
      or scheme == "socks5" or scheme == "socks5h"
    if ok_scheme and rest:match("^[^/?#%s]+") and not rest:match("%s") then return v end
  end
  ctx:err(path, "must be a proxy URL: http://host:port, https://..., socks5://..., socks5h://... (user:password@ allowed)" .. got(v))
  return nil
end

local function redis_url(v, path, ctx)
  if type(v) == "string" then
    local l = v:lower()
    if l:match("^rediss?://.") or l:match("^unix:///.") or v:match("^/.") then return v end
    if l:match("^redis%-sentinel://[^/]+/[^/?#]") then return v end
  end
  ctx:err(path, "must start with redis://, rediss://, redis-sentinel://host:26379,.../master-name or unix://, or be an absolute socket path" .. got(v))
  return nil
end

local function env_default(name)
  return function(ctx)
    local v = ctx.lookup(name)
    if v == "" then v = nil end
    return v, name
  end
end

local function methods_check(v, path, ctx)
  local list = array(function(m, p, c)
    if type(m) ~= "string" or not m:match("^%a+$") then
      c:err(p, 'must be an HTTP method name such as "GET" or "POST"' .. got(m)); return nil
    end
    return m:upper()
  end, "HTTP method names")(v, path, ctx)
  if list and #list == 0 then ctx:err(path, "must not be empty (leave methods out to match every method)") end
  return list
end

local KEY_EXPECT = 'must be "ip", "user", "header:<name>" or a function(req) returning a string'
local function key_check(v, path, ctx)
  if type(v) == "function" or v == "ip" or v == "user" then return v end
  if type(v) == "string" then
    local name = v:match("^[Hh][Ee][Aa][Dd][Ee][Rr]:(.+)$")
    if name and name:match("^[%w!#$%%&'*+.^_`|~-]+$") then return "header:" .. name:lower() end
  end
  ctx:err(path, KEY_EXPECT .. got(v))
  return nil
end

local policy_record = record({
  limit = F(integer(1, 1e9), nil, "integer 1..1000000000, requests per window"),
  window = F(number(0, 2592000, true), nil, "number of seconds > 0 and <= 2592000"),
  burst = F(integer(1, 1e9)),
  key = F(key_check, "ip"),
  paths = F(array(url_path, 'paths starting with "/"'), { "/" }),
  methods = F(methods_check),
})

local POLICY_FIELDS = { limit = true, window = true, burst = true, key = true, paths = true, methods = true }

local function methods_overlap(a, b)
  if a == nil or b == nil then return a == nil and b == nil end
  for _, x in ipairs(a) do for _, y in ipairs(b) do if x == y then return true end end end
  return false
end

local function ratelimit_check(v, path, ctx)
  if v == false then return {} end
  if type(v) ~= "table" then
    ctx:err(path, "must be a table of named policies or false" .. got(v)); return nil
  end
  local out, claims = {}, {}
  for _, name in ipairs(sorted_keys(v)) do
    local p = child(path, name)
    local pv = v[name]
    if type(name) ~= "string" or not name:match("^[%a_][%w_-]*$") then
      ctx:err(p, "policy name must be an identifier (letters, digits, _ and -)" .. got(name))
    elseif type(pv) ~= "table" then
      local hint = POLICY_FIELDS[name] and
        "; ratelimit takes named policies: ratelimit = { api = { limit = 1000, window = 900 } }" or ""
      ctx:err(p, "must be a rate-limit policy table" .. got(pv) .. hint)
    else
      local pol = policy_record(pv, p, ctx)
      pol.burst = pol.burst or pol.limit
      if type(pol.key) == "function" then
        pol.key_kind = "function"
      elseif pol.key then
        pol.key_kind = pol.key:match("^header:") and "header" or pol.key
        pol.key_header = pol.key:match("^header:(.+)$")
      end
      for i, prefix in ipairs(pol.paths or {}) do
        for _, c in ipairs(claims[prefix] or {}) do
          if methods_overlap(c.methods, pol.methods) then
            ctx:err(child(child(p, "paths"), i),
                    quote(prefix) .. " is already used by policy " .. c.name .. " for the same methods")
          end
        end
        claims[prefix] = claims[prefix] or {}
        table.insert(claims[prefix], { name = name, methods = pol.methods })
      end
      out[name] = pol
    end
  end
  return out
end

local admin_record = record({
  token = F(optional_string(nonempty_string)),
  loopback_only = F(boolean, true),
})

local function admin_check(v, path, ctx)
  local out = admin_record(v, path, ctx)
  if out and out.loopback_only == false and out.token == nil then
    ctx:err(child(path, "token"), "required when admin.loopback_only = false")
  end
  return out
end

-- session.keys: signing keys, newest first (the first signs, all verify: rotation). A string is
-- a comma-separated list (the form SLUICE_SESSION_KEYS takes). Never echoed in messages.
local function session_keys(v, path, ctx)
  if type(v) == "string" then
    local list = {}
    for k in v:gmatch("[^,]+") do list[#list + 1] = k end
    v = list
  end
  if type(v) ~= "table" or not is_array(v) or #v == 0 or #v > 4 then
    ctx:err(path, "must be an array of 1..4 key strings, newest first (or a comma-separated string)"); return nil
  end
  local out = {}
  for i = 1, #v do
    if type(v[i]) ~= "string" or #v[i] < 32 then
      local what = type(v[i]) == "string" and (#v[i] .. " bytes") or type(v[i])
      ctx:err(child(path, i), "must be a string of at least 32 bytes (got " .. what .. "); make one with: head -c 32 /dev/urandom | base64")
    else
      out[i] = v[i]
    end
  end
  return out
end

local function cookie_name(v, path, ctx)
  if type(v) ~= "string" or not v:match("^[%w!#$%%&'*+.^_`|~-]+$") then
    ctx:err(path, "must be a cookie name (letters, digits and !#$%&'*+.^_`|~-)" .. got(v)); return nil
  end
  return v
end

local session_record = record({
  keys = F(session_keys, env_default("SLUICE_SESSION_KEYS")),
  store = F(enum("cache", "cookie"), "cache"),
  cookie = F(cookie_name, "sluice_sid"),
  ttl = F(integer(1, 366 * 86400), 86400),
  secure = F(boolean, function(ctx) return ctx.env == "production" end),
  samesite = F(enum("Lax", "Strict", "None"), "Lax"),
})

local function session_check(v, path, ctx)
  local out = session_record(v, path, ctx)
  if out and out.store == "cookie" and not out.keys then
    ctx:err(child(path, "keys"), 'required when session.store = "cookie" (or set SLUICE_SESSION_KEYS)')
  end
  if out and out.samesite == "None" and out.secure == false then
    ctx:err(child(path, "secure"), 'must be true when session.samesite = "None" (browsers drop the cookie otherwise)')
  end
  return out
end

---------------------------------------------------------------------------------------------
-- The schema
---------------------------------------------------------------------------------------------

local DAY = 86400

local TOP = record({
  port = F(integer(1, 65535), 5000),
  host = F(host_check, "0.0.0.0"),
  workers = F(workers_check, "auto"),
  env = F(enum("production", "development"), "development"),
  scripts = F(scripts_check, { "scripts/app.lua" }),
  templates = F(file_check, "templates"),     -- app.render's directory, relative to config.lua
  limits = F(record({
    max_connections = F(integer(1, 1e7), 11000),   -- 10,000 SSE streams plus room for requests
    request_timeout = F(number(0, DAY, true), 30),
    header_timeout = F(number(0, DAY, true), 10),
    keepalive_timeout = F(number(0, DAY, true), 75),
    body_size = F(integer(1, 2 ^ 31), 10485760),
    header_size = F(integer(1024, 1048576), 16384),
    url_size = F(integer(64, 1048576), 8192),
    max_headers = F(integer(1, 10000), 100),
    max_output_buffer = F(integer(16384, 2 ^ 31), 1048576),
    script_timeout = F(number(0, DAY), 5),
    lua_memory = F(integer(0, 1048576), 512),       -- MB per Lua state, 0 = no budget
    jit = F(boolean, true),                         -- false: interpreter only (every runaway stopped)
  }), {}),
  cors = F(record({
    origins = F(array(nonempty_string, "origins (\"*\" or scheme://host[:port])"), {}),
    methods = F(array(nonempty_string, "method names"), { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE" }),
    headers = F(array(nonempty_string, "header names"), { "content-type", "authorization", "x-request-id" }),
    expose = F(array(nonempty_string, "header names"), { "x-request-id" }),
    credentials = F(boolean, false),
    max_age = F(integer(0, DAY), 600),
  }), {}),
  compression = F(record({
    enabled = F(boolean, true),
    level = F(integer(1, 9), 6),
    threshold = F(integer(0, 2 ^ 31), 1024),
    types = F(array(content_type, "content-type prefixes"), {
      "text/", "application/json", "application/javascript", "application/xml",
      "application/x-ndjson", "application/wasm", "image/svg+xml",
    }),
  }), {}),
  log = F(record({
    access = F(enum("off", "text", "json"), function(ctx) return ctx.env == "production" and "off" or "text" end),
    level = F(enum("debug", "info", "warn", "error"), "info"),
    file = F(file_check),
    format = F(enum("text", "json"), "text"),
  }), {}),
  password = F(record({
    ops_limit = F(integer(1, 100), 2),
    mem_limit_kb = F(integer(8, 4194304), 19456),
    threads = F(integer(1, 64), 2),
  }), {}),
  session = F(session_check, {}),
  ratelimit = F(ratelimit_check, {
    api = { limit = 1000, window = 900, key = "ip", paths = { "/" } },
    monitoring = { limit = 300, window = 60, key = "ip", paths = { "/metrics", "/health", "/ready" } },
  }),
  limiter = F(record({
    max_keys = F(integer(1, 1e8), 100000),
    ipv6_prefix = F(integer(1, 128), 64),
    headers = F(boolean, true),
    redis_failure = F(enum("open", "closed"), "open"),
  }), {}),
  trusted_proxies = F(array(cidr_check, "CIDR strings"), {}),
  sse = F(record({
    max_connections = F(integer(1, 1e7), 10000),
    per_user = F(integer(1, 1e6), 10),
    heartbeat = F(number(1, 3600), 30),
    retention = F(integer(0, 1e6), 1000),
    retention_seconds = F(number(0, 30 * DAY), 0),
    per_channel = F(integer(0, 1e7), 0),
    cleanup_interval = F(number(1, DAY), 300),
    publish_token = F(optional_string(nonempty_string)),
    publish_path = F(url_path, "/_sluice/publish"),
    max_queue = F(integer(1, 1e6), 1024),
    slow_policy = F(enum("disconnect", "drop_oldest"), "disconnect"),
    slow_timeout = F(number(0.01, 3600), 5),
  }), {}),
  database = F(record({
    url = F(optional_string(pg_url), env_default("DATABASE_URL")),
    replica_urls = F(replicas_check, {}),
    statement_timeout = F(number(0, DAY), 30),
    health_interval = F(number(0, 3600), 5),
  }), {}),
  health = F(record({
    -- nil: the database when one is configured, and Redis when limiter.redis_failure = "closed"
    ready_requires = F(function(v, path, ctx)
      local list = array(enum("database", "redis"), 'dependency names ("database", "redis")')(v, path, ctx)
      if not list then return nil end
      local seen = {}
      for i, d in ipairs(list) do
        if seen[d] then ctx:err(child(path, i), "duplicate of " .. quote(d)) end
        seen[d] = true
      end
      return list
    end),
  }), {}),
  redis = F(record({
    url = F(optional_string(redis_url), env_default("REDIS_URL")),
    prefix = F(function(v, path, ctx)
      if type(v) ~= "string" or #v > 64 then ctx:err(path, "must be a string of at most 64 bytes" .. got(v)); return nil end
      return v
    end, "sluice:"),
  }), {}),
  http_client = F(record({                         -- app.http (docs/http-client.md)
    max_concurrent = F(integer(1, 1e6), 256),      -- per worker; more wait FIFO
    queue_timeout = F(number(0, DAY), 5),
    max_per_host = F(integer(0, 1e6), 64),         -- requests in flight per host and worker, 0 = no cap
    max_idle = F(integer(1, 1e6), 64),             -- idle keep-alive connections kept per worker
    timeout = F(number(0, DAY), 10),               -- 0 = none
    connect_timeout = F(number(0, DAY), 3),
    max_body = F(integer(0, 2 ^ 40), 10485760),    -- 0 = no limit
    follow_redirects = F(boolean, false),
    max_redirects = F(integer(0, 100), 5),
    verify_tls = F(boolean, true),
    decompress = F(boolean, true),
    ca_file = F(file_check),
    client_cert = F(file_check),
    client_key = F(file_check),
    key_password = F(optional_string(nonempty_string)),
    proxy = F(optional_string(proxy_url)),         -- unset: https_proxy / HTTPS_PROXY / http_proxy / HTTP_PROXY / all_proxy
    no_proxy = F(optional_string(nonempty_string)),
    user_agent = F(nonempty_string, "sluice"),
  }), {}),
  admin = F(admin_check, {}),
  metrics = F(record({
    retention = F(integer(100, 1000), 300),
    interval = F(number(1, 3600), 10),
    max_channels = F(integer(1, 100000), 100),
    errors = F(integer(1, 100000), 500),
  }), {}),
  shutdown_timeout = F(number(0, 3600), 30),
  app = F(anything, {}),
})

---------------------------------------------------------------------------------------------
-- Public API
---------------------------------------------------------------------------------------------

local ENVS = { production = true, development = true }

-- normalize(user, opts) -> cfg | nil, errors.
-- opts: file (path of config.lua, for messages and relative paths), env (SLUICE_ENV),
-- port_env (PORT), lookup_env (function(name) -> string|nil, used for DATABASE_URL,
-- REDIS_URL and, when opts.env / opts.port_env are nil, SLUICE_ENV / PORT).
function M.normalize(user, opts)
  opts = opts or {}
  local file = opts.file or "config.lua"
  local lookup = opts.lookup_env or function() return nil end
  local ctx = setmetatable({ errors = {}, dir = dirname(file), lookup = lookup }, Ctx)
  if type(user) ~= "table" then
    return nil, { file .. ": must return a table" .. got(user) }
  end

  -- The environment decides defaults (log.access), so settle it before the main pass.
  local env_var = opts.env
  if env_var == nil then env_var = lookup("SLUICE_ENV") end
  if env_var == "" then env_var = nil end
  ctx.env = ENVS[user.env] and user.env or "development"
  if env_var ~= nil then
    if ENVS[env_var] then ctx.env = env_var
    else ctx:err({ "env" }, 'SLUICE_ENV must be "production" or "development"' .. got(env_var)) end
  end

  local out = TOP(user, {}, ctx)
  out.env = ctx.env

  local port_var = opts.port_env
  if port_var == nil then port_var = lookup("PORT") end
  if port_var ~= nil and port_var ~= "" then
    local n = type(port_var) == "string" and port_var:match("^%s*(%d+)%s*$")
    n = n and tonumber(n)
    if n and n >= 1 and n <= 65535 then out.port = n
    else ctx:err({ "port" }, "PORT must be an integer 1..65535" .. got(port_var)) end
  end

  local errs = ctx.errors
  if #errs == 0 then return out end
  table.sort(errs, function(a, b)
    for i = 1, math.max(#a.path, #b.path) do
      local x, y = a.path[i], b.path[i]
      if x == nil then return y ~= nil end
      if y == nil then return false end
      if x ~= y then return key_less(x, y) end
    end
    return a.seq < b.seq
  end)
  local msgs = {}
  for i, e in ipairs(errs) do
    local p = path_str(e.path)
    msgs[i] = file .. ": " .. (p ~= "" and (p .. ": ") or "") .. e.msg
  end
  return nil, msgs
end

-- load(path, opts) -> cfg | nil, errors: run config.lua and normalize what it returns.
-- Syntax and runtime errors come back as "file:line: message" (one entry).
function M.load(path, opts)
  opts = opts or {}
  local chunk, err = loadfile(path)
  if not chunk then return nil, { err } end
  local ok, user = pcall(chunk)
  if not ok then return nil, { tostring(user) } end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.file = o.file or path
  return M.normalize(user, o)
end

-- defaults(env) -> the normalized config of an empty config.lua (no environment lookups).
function M.defaults(env)
  return M.normalize({}, { env = env or "development" })
end

local function prefix_match(prefix, path)
  if path == prefix then return true end
  if path:sub(1, #prefix) ~= prefix then return false end
  return prefix:sub(-1) == "/" or path:sub(#prefix + 1, #prefix + 1) == "/"
end

-- policy_routes(cfg) -> array of { path, policy, methods } in match order: longest path
-- first; at equal length a policy restricted by methods first; then by policy name. The
-- first entry whose path matches (segment-aware) and whose methods allow the request wins.
function M.policy_routes(cfg)
  local routes = {}
  for name, pol in pairs(cfg.ratelimit or {}) do
    for _, p in ipairs(pol.paths or {}) do
      routes[#routes + 1] = { path = p, policy = name, methods = pol.methods }
    end
  end
  table.sort(routes, function(a, b)
    if #a.path ~= #b.path then return #a.path > #b.path end
    if (a.methods ~= nil) ~= (b.methods ~= nil) then return a.methods ~= nil end
    if a.policy ~= b.policy then return a.policy < b.policy end
    return a.path < b.path
  end)
  return routes
end

-- match_policy(cfg, path [, method]) -> policy name, policy | nil. The query string is
-- ignored. Without a method, policies restricted by `methods` never match.
function M.match_policy(cfg, path, method)
  path = path:match("^[^?#]*")
  method = method and method:upper()
  for _, r in ipairs(M.policy_routes(cfg)) do
    if prefix_match(r.path, path) then
      local allowed = r.methods == nil
      for _, m in ipairs(r.methods or {}) do if m == method then allowed = true end end
      if allowed then return r.policy, cfg.ratelimit[r.policy] end
    end
  end
  return nil
end

-- restart_keys(old, new) -> array of keys that changed but only take effect on restart.
function M.restart_keys(old, new)
  local out = {}
  for _, k in ipairs({ "host", "port", "workers" }) do
    if old[k] ~= new[k] then out[#out + 1] = k end
  end
  return out
end

return M
