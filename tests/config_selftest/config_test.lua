-- config_test: self-tests of lua/config.lua; run through tests/config_selftest/run.sh.
local config = require("config")

local passed, failed = 0, 0
local function ok(cond, name, detail)
  if cond then
    passed = passed + 1
  else
    failed = failed + 1
    io.stderr:write("FAIL: " .. name .. (detail and ("\n      " .. detail) or "") .. "\n")
  end
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function eq(got, want, name) ok(got == want, name, "got " .. show(got) .. ", want " .. show(want)) end

local function deep_eq(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function norm(user, opts) return config.normalize(user, opts or { file = "config.lua" }) end

-- Expect success; on failure print the errors so the test output says why.
local function good(user, opts, name)
  local cfg, errs = norm(user, opts)
  ok(cfg ~= nil, name .. ": accepted", errs and table.concat(errs, "\n      "))
  return cfg or {}
end

-- Expect rejection with exactly `want` among the messages (file prefix "config.lua: ").
local function bad(user, want, name, opts)
  local cfg, errs = norm(user, opts)
  ok(cfg == nil, name .. ": rejected")
  errs = errs or {}
  local found = false
  for _, e in ipairs(errs) do if e == want then found = true end end
  ok(found, name .. ": message", "want " .. show(want) .. "\n      got  " .. table.concat(errs, "\n           "))
  return errs
end

------------------------------------------------------------------------------------------ defaults
do
  local cfg = good({}, nil, "empty config")
  eq(cfg.port, 5000, "default port")
  eq(cfg.host, "0.0.0.0", "default host")
  eq(cfg.workers, "auto", "default workers")
  eq(cfg.env, "development", "default env")
  ok(deep_eq(cfg.scripts, { "scripts/app.lua" }), "default scripts")
  eq(cfg.limits.max_connections, 11000, "limits.max_connections")
  eq(cfg.limits.request_timeout, 30, "limits.request_timeout")
  eq(cfg.limits.header_timeout, 10, "limits.header_timeout")
  eq(cfg.limits.keepalive_timeout, 75, "limits.keepalive_timeout")
  eq(cfg.limits.body_size, 10485760, "limits.body_size")
  eq(cfg.limits.header_size, 16384, "limits.header_size")
  eq(cfg.limits.url_size, 8192, "limits.url_size")
  eq(cfg.limits.max_headers, 100, "limits.max_headers")
  eq(cfg.compression.enabled, true, "compression.enabled")
  eq(cfg.compression.level, 6, "compression.level")
  eq(cfg.compression.threshold, 1024, "compression.threshold")
  eq(cfg.compression.types[1], "text/", "compression.types[1]")
  eq(cfg.log.access, "text", "log.access in development")
  eq(cfg.log.level, "info", "log.level")
  eq(cfg.log.file, nil, "log.file")
  eq(cfg.ratelimit.api.limit, 1000, "ratelimit.api.limit")
  eq(cfg.ratelimit.api.window, 900, "ratelimit.api.window")
  eq(cfg.ratelimit.api.burst, 1000, "ratelimit.api.burst defaults to limit")
  eq(cfg.ratelimit.api.key, "ip", "ratelimit.api.key")
  eq(cfg.ratelimit.api.key_kind, "ip", "ratelimit.api.key_kind")
  ok(deep_eq(cfg.ratelimit.monitoring.paths, { "/metrics", "/health", "/ready" }), "monitoring paths")
  eq(cfg.ratelimit.monitoring.limit, 300, "monitoring limit")
  eq(cfg.ratelimit.monitoring.window, 60, "monitoring window")
  eq(cfg.limiter.max_keys, 100000, "limiter.max_keys")
  eq(cfg.limiter.ipv6_prefix, 64, "limiter.ipv6_prefix")
  eq(cfg.limiter.headers, true, "limiter.headers")
  ok(deep_eq(cfg.trusted_proxies, {}), "trusted_proxies empty")
  eq(cfg.sse.max_connections, 10000, "sse.max_connections")
  eq(cfg.sse.per_user, 10, "sse.per_user")
  eq(cfg.sse.heartbeat, 30, "sse.heartbeat")
  eq(cfg.sse.retention, 1000, "sse.retention")
  eq(cfg.sse.retention_seconds, 0, "sse.retention_seconds")
  eq(cfg.sse.per_channel, 0, "sse.per_channel")
  eq(cfg.sse.cleanup_interval, 300, "sse.cleanup_interval")
  eq(cfg.sse.publish_token, nil, "sse.publish_token")
  eq(cfg.sse.publish_path, "/_sluice/publish", "sse.publish_path")
  eq(cfg.database.url, nil, "database.url")
  ok(deep_eq(cfg.database.replica_urls, {}), "database.replica_urls empty")
  eq(cfg.database.statement_timeout, 30, "database.statement_timeout")
  eq(cfg.database.health_interval, 5, "database.health_interval")
  eq(cfg.health.ready_requires, nil, "health.ready_requires: not set (the C side picks the default)")
  eq(cfg.redis.url, nil, "redis.url")
  eq(cfg.redis.prefix, "sluice:", "redis.prefix")
  eq(cfg.admin.token, nil, "admin.token")
  eq(cfg.admin.loopback_only, true, "admin.loopback_only")
  eq(cfg.metrics.retention, 300, "metrics.retention")
  eq(cfg.metrics.interval, 10, "metrics.interval")
  eq(cfg.metrics.max_channels, 100, "metrics.max_channels")
  eq(cfg.metrics.errors, 500, "metrics.errors")
  eq(cfg.shutdown_timeout, 30, "shutdown_timeout")
  ok(deep_eq(cfg.app, {}), "app empty")

  local prod = good({ env = "production" }, nil, "production")
  eq(prod.env, "production", "env from config")
  eq(prod.log.access, "off", "log.access off in production")
  eq(good({ env = "production", log = { access = "json" } }, nil, "explicit access").log.access, "json",
     "explicit log.access wins in production")
  ok(deep_eq(config.defaults(), good({}, nil, "defaults()")), "defaults() equals normalize({})")
end

------------------------------------------------------------------------------------------ overrides
do
  local user = {
    port = 8080, workers = 4, host = "127.0.0.1",
    limits = { body_size = 1024 * 1024, request_timeout = 2.5 },
    sse = { heartbeat = 15 },
    compression = { enabled = false, types = { "Text/HTML" } },
    app = { greeting = "hi", nested = { list = { 1, 2, 3 } } },
    trusted_proxies = { "10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8", "::ffff:10.0.0.1/128" },
    database = { url = "postgresql://u:p@localhost:5432/db?connection_limit=50&pool_timeout=20",
                 replica_urls = " postgres://r1/db , postgres://r2/db ,", statement_timeout = 0 },
    redis = { url = "redis://localhost:6379", prefix = "" },
    admin = { token = "s3cret", loopback_only = false },
    ratelimit = { api = { limit = 10, window = 1, burst = 20 } },
  }
  local before = config.defaults() -- unrelated table, just to touch module state
  local snapshot = { port = user.port, limits_n = 0 }
  for _ in pairs(user.limits) do snapshot.limits_n = snapshot.limits_n + 1 end
  local cfg = good(user, nil, "overrides")
  eq(cfg.port, 8080, "port override")
  eq(cfg.workers, 4, "workers number")
  eq(cfg.host, "127.0.0.1", "host")
  eq(cfg.limits.body_size, 1048576, "limits.body_size override")
  eq(cfg.limits.request_timeout, 2.5, "fractional timeout")
  eq(cfg.limits.header_timeout, 10, "partial section keeps other defaults")
  eq(cfg.sse.heartbeat, 15, "sse.heartbeat override")
  eq(cfg.sse.per_user, 10, "sse.per_user default kept")
  eq(cfg.compression.enabled, false, "compression off")
  ok(deep_eq(cfg.compression.types, { "text/html" }), "content types lower-cased")
  eq(cfg.app.greeting, "hi", "app value")
  ok(cfg.app ~= user.app and cfg.app.nested ~= user.app.nested, "app is copied, not shared")
  ok(deep_eq(cfg.app, user.app), "app copied faithfully")
  eq(#cfg.trusted_proxies, 5, "trusted proxies kept")
  ok(deep_eq(cfg.database.replica_urls, { "postgres://r1/db", "postgres://r2/db" }),
     "replica_urls comma string split and trimmed")
  eq(cfg.database.statement_timeout, 0, "statement_timeout 0 = none")
  eq(cfg.redis.prefix, "", "empty redis prefix allowed")
  eq(cfg.admin.token, "s3cret", "admin token")
  eq(cfg.ratelimit.api.burst, 20, "explicit burst")
  ok(cfg ~= user and cfg.limits ~= user.limits and cfg.ratelimit.api ~= user.ratelimit.api, "new tables")
  -- the user's table is untouched
  eq(user.port, snapshot.port, "user port untouched")
  local n = 0
  for _ in pairs(user.limits) do n = n + 1 end
  eq(n, snapshot.limits_n, "user limits not filled in")
  eq(user.ratelimit.api.key, nil, "user policy not filled in")
  eq(user.compression.types[1], "Text/HTML", "user types not lower-cased in place")
  ok(before.port == 5000, "defaults unaffected")

  local arr = good({ database = { replica_urls = { "postgres://a/x" } } }, nil, "replica array")
  ok(deep_eq(arr.database.replica_urls, { "postgres://a/x" }), "replica_urls array")
  eq(good({ database = { url = "" }, redis = { url = "" } }, nil, "empty urls").database.url, nil,
     "empty database.url means unset")
  eq(good({ redis = { url = "/run/redis.sock" } }, nil, "redis socket").redis.url, "/run/redis.sock", "redis unix path")
  eq(good({ redis = { url = "rediss://h:6380/0" } }, nil, "rediss").redis.url, "rediss://h:6380/0", "rediss url")
  eq(good({ redis = { url = "unix:///tmp/r.sock" } }, nil, "unix url").redis.url, "unix:///tmp/r.sock", "unix:// url")
  eq(good({ workers = "auto" }, nil, "auto").workers, "auto", "workers auto")

  local fkey = function(req) return req.headers["x-user"] end
  local kc = good({ ratelimit = {
    a = { limit = 5, window = 60, key = "Header:X-Api-Key", paths = { "/a" } },
    b = { limit = 5, window = 60, key = fkey, paths = { "/b" } },
    c = { limit = 5, window = 60, key = "user", paths = { "/c" }, methods = { "post", "Put" } },
  } }, nil, "key kinds")
  eq(kc.ratelimit.a.key, "header:x-api-key", "header key normalized")
  eq(kc.ratelimit.a.key_kind, "header", "header key_kind")
  eq(kc.ratelimit.a.key_header, "x-api-key", "header key_header")
  eq(kc.ratelimit.b.key, fkey, "function key kept")
  eq(kc.ratelimit.b.key_kind, "function", "function key_kind")
  eq(kc.ratelimit.c.key_kind, "user", "user key_kind")
  ok(deep_eq(kc.ratelimit.c.methods, { "POST", "PUT" }), "methods upper-cased")
  ok(deep_eq(kc.ratelimit.a.paths, { "/a" }), "paths kept")
  eq(kc.ratelimit.api, nil, "user ratelimit replaces default api policy")
  eq(kc.ratelimit.monitoring, nil, "user ratelimit replaces default monitoring policy")
end

------------------------------------------------------------------------------------------ errors
bad({ ratelimit = { api = { limit = 5, windw = 60 } } },
    "config.lua: ratelimit.api.windw: unknown key (did you mean window?)", "unknown key with suggestion")
bad({ prot = 1 }, "config.lua: prot: unknown key (did you mean port?)", "transposition suggestion")
bad({ Workers = 2 }, "config.lua: Workers: unknown key (did you mean workers?)", "case-insensitive suggestion")
bad({ limits = { bodysize = 1 } }, "config.lua: limits.bodysize: unknown key (did you mean body_size?)", "missing underscore")
bad({ zzzzzzzz = 1 }, "config.lua: zzzzzzzz: unknown key", "unknown key without suggestion")
bad({ limits = { 10 } }, "config.lua: limits[1]: unknown key", "positional value in a section")
bad({ limits = { body_size = "ten" } },
    'config.lua: limits.body_size: must be an integer 1..2147483648 (got string "ten")', "wrong type")
bad({ limits = { body_size = 0 } }, "config.lua: limits.body_size: must be an integer 1..2147483648 (got number 0)",
    "body_size too small")
bad({ limits = { body_size = 1.5 } }, "config.lua: limits.body_size: must be an integer 1..2147483648 (got number 1.5)",
    "fraction where integer needed")
bad({ limits = { header_size = 100 } }, "config.lua: limits.header_size: must be an integer 1024..1048576 (got number 100)",
    "header_size range")
bad({ limits = { request_timeout = 0 } },
    "config.lua: limits.request_timeout: must be a number > 0 and <= 86400 (got number 0)", "timeout zero")
bad({ limits = { keepalive_timeout = 86401 } },
    "config.lua: limits.keepalive_timeout: must be a number > 0 and <= 86400 (got number 86401)", "timeout too big")
bad({ limits = { request_timeout = 0 / 0 } },
    "config.lua: limits.request_timeout: must be a number > 0 and <= 86400 (got number nan)", "nan")
bad({ limits = { max_connections = 1 / 0 } },
    "config.lua: limits.max_connections: must be an integer 1..10000000 (got number inf)", "infinity")
bad({ limits = 5 }, "config.lua: limits: must be a table (got number 5)", "section wrong type")
bad({ compression = { level = 10 } }, "config.lua: compression.level: must be an integer 1..9 (got number 10)", "level")
bad({ compression = { enabled = "yes" } }, 'config.lua: compression.enabled: must be a boolean (got string "yes")', "boolean")
bad({ sse = { heartbeat = 0 } }, "config.lua: sse.heartbeat: must be a number 1..3600 (got number 0)", "heartbeat")
bad({ sse = { per_user = 0 } }, "config.lua: sse.per_user: must be an integer 1..1000000 (got number 0)", "per_user")
bad({ sse = { retention = 1000001 } }, "config.lua: sse.retention: must be an integer 0..1000000 (got number 1000001)",
    "retention")
bad({ sse = { publish_path = "publish" } },
    'config.lua: sse.publish_path: must be a path starting with "/" (no spaces, "?" or "#") (got string "publish")',
    "publish_path")
bad({ port = 70000 }, "config.lua: port: must be an integer 1..65535 (got number 70000)", "port range")
bad({ port = "80" }, 'config.lua: port: must be an integer 1..65535 (got string "80")', "port as string")
bad({ workers = 0 }, 'config.lua: workers: must be "auto" or an integer 1..256 (got number 0)', "workers 0")
bad({ workers = "many" }, 'config.lua: workers: must be "auto" or an integer 1..256 (got string "many")', "workers str")
bad({ host = "0.0.0.0 " }, 'config.lua: host: must be a listen address such as "0.0.0.0", "::" or "127.0.0.1" (got string "0.0.0.0 ")',
    "host with space")
bad({ env = "prod" }, 'config.lua: env: must be one of "production", "development" (got string "prod")', "env")
bad({ log = { level = "Info" } }, 'config.lua: log.level: must be one of "debug", "info", "warn", "error" (got string "Info") (did you mean "info"?)',
    "enum suggestion")
bad({ log = { access = true } }, 'config.lua: log.access: must be one of "off", "text", "json" (got boolean true)', "access")
bad({ metrics = { retention = 50 } }, "config.lua: metrics.retention: must be an integer 100..1000 (got number 50)", "metrics")
bad({ limiter = { ipv6_prefix = 129 } }, "config.lua: limiter.ipv6_prefix: must be an integer 1..128 (got number 129)", "v6 prefix")
bad({ shutdown_timeout = -1 }, "config.lua: shutdown_timeout: must be a number 0..3600 (got number -1)", "shutdown")
do
  local cfg = good({ health = { ready_requires = {} } }, nil, "ready_requires = {}")
  ok(cfg and deep_eq(cfg.health.ready_requires, {}), "ready_requires {} kept (nothing required)")
  cfg = good({ health = { ready_requires = { "redis", "database" } } }, nil, "ready_requires both")
  ok(cfg and deep_eq(cfg.health.ready_requires, { "redis", "database" }), "ready_requires list kept")
end
bad({ health = { ready_requires = { "database", "database" } } },
    'config.lua: health.ready_requires[2]: duplicate of "database"', "ready_requires duplicate")
bad({ health = { ready_requires = "database" } },
    'config.lua: health.ready_requires: must be an array of dependency names ("database", "redis") (got string "database")', "ready_requires string")
bad({ database = { health_interval = -1 } }, "config.lua: database.health_interval: must be a number 0..3600 (got number -1)", "health_interval")
bad({ admin = { loopback_only = false } },
    "config.lua: admin.token: required when admin.loopback_only = false", "admin without token")
bad({ admin = { token = 42 } }, "config.lua: admin.token: must be a non-empty string (got number 42)", "admin token type")

-- scripts
bad({ scripts = "app.lua" }, 'config.lua: scripts: must be an array of non-empty strings (script paths) (got string "app.lua")',
    "scripts not an array")
bad({ scripts = { "a.lua", "" } }, 'config.lua: scripts[2]: must be a non-empty string (got string "")', "empty script")
bad({ scripts = { "a.lua", "./a.lua" } }, 'config.lua: scripts[2]: duplicate of scripts[1] ("a.lua")', "duplicate script")
bad({ scripts = { [1] = "a.lua", [3] = "b.lua" } }, "config.lua: scripts: must be an array of non-empty strings (script paths) (got table)",
    "scripts with a hole")

-- trusted proxies
for _, s in ipairs({ "10.0.0.300/8", "10.0.0.0/33", "::1/129", "hello", "10.0.0.0/", "10.0.0/8" }) do
  bad({ trusted_proxies = { s } },
      'config.lua: trusted_proxies[1]: must be an IPv4 or IPv6 address with optional /bits, e.g. "10.0.0.0/8" (got string "'
      .. s .. '")', "bad cidr " .. s)
end

-- rate-limit policies
bad({ ratelimit = { api = { window = 60 } } },
    "config.lua: ratelimit.api.limit: missing required key (integer 1..1000000000, requests per window)", "limit missing")
bad({ ratelimit = { api = { limit = 5 } } },
    "config.lua: ratelimit.api.window: missing required key (number of seconds > 0 and <= 2592000)", "window missing")
bad({ ratelimit = { api = { limit = 5, window = -1 } } },
    "config.lua: ratelimit.api.window: must be a number > 0 and <= 2592000 (got number -1)", "window negative")
bad({ ratelimit = { api = { limit = 5, window = 1, burst = 0 } } },
    "config.lua: ratelimit.api.burst: must be an integer 1..1000000000 (got number 0)", "burst 0")
bad({ ratelimit = { api = { limit = 5, window = 1, paths = { "api" } } } },
    'config.lua: ratelimit.api.paths[1]: must be a path starting with "/" (no spaces, "?" or "#") (got string "api")',
    "path without slash")
bad({ ratelimit = { api = { limit = 5, window = 1, paths = "/" } } },
    'config.lua: ratelimit.api.paths: must be an array of paths starting with "/" (got string "/")', "paths not array")
bad({ ratelimit = { api = { limit = 5, window = 1, methods = { "GET", "NOT A METHOD" } } } },
    'config.lua: ratelimit.api.methods[2]: must be an HTTP method name such as "GET" or "POST" (got string "NOT A METHOD")',
    "bad method")
bad({ ratelimit = { api = { limit = 5, window = 1, methods = {} } } },
    "config.lua: ratelimit.api.methods: must not be empty (leave methods out to match every method)", "empty methods")
local KEYMSG = 'must be "ip", "user", "header:<name>" or a function(req) returning a string'
bad({ ratelimit = { api = { limit = 5, window = 1, key = "ipp" } } },
    'config.lua: ratelimit.api.key: ' .. KEYMSG .. ' (got string "ipp")', "bad key kind")
bad({ ratelimit = { api = { limit = 5, window = 1, key = "header:" } } },
    'config.lua: ratelimit.api.key: ' .. KEYMSG .. ' (got string "header:")', "header key without name")
bad({ ratelimit = { api = { limit = 5, window = 1, key = "header:x y" } } },
    'config.lua: ratelimit.api.key: ' .. KEYMSG .. ' (got string "header:x y")', "header key with space")
bad({ ratelimit = { api = { limit = 5, window = 1, key = 7 } } },
    'config.lua: ratelimit.api.key: ' .. KEYMSG .. ' (got number 7)', "numeric key")
bad({ ratelimit = { ["9lives"] = { limit = 5, window = 1 } } },
    'config.lua: ratelimit["9lives"]: policy name must be an identifier (letters, digits, _ and -) (got string "9lives")',
    "bad policy name")
bad({ ratelimit = { { limit = 5, window = 1 } } },
    "config.lua: ratelimit[1]: policy name must be an identifier (letters, digits, _ and -) (got number 1)",
    "array of policies")
bad({ ratelimit = { limit = 5, window = 60 } },
    "config.lua: ratelimit.limit: must be a rate-limit policy table (got number 5); ratelimit takes named policies: "
    .. "ratelimit = { api = { limit = 1000, window = 900 } }", "fields directly under ratelimit")
bad({ ratelimit = true }, "config.lua: ratelimit: must be a table of named policies or false (got boolean true)",
    "ratelimit = true")
bad({ ratelimit = { a = { limit = 1, window = 1 }, b = { limit = 1, window = 1 } } },
    'config.lua: ratelimit.b.paths[1]: "/" is already used by policy a for the same methods', "conflicting paths")
bad({ ratelimit = { a = { limit = 1, window = 1, paths = { "/x" }, methods = { "GET", "POST" } },
                    b = { limit = 1, window = 1, paths = { "/x" }, methods = { "post" } } } },
    'config.lua: ratelimit.b.paths[1]: "/x" is already used by policy a for the same methods', "overlapping methods")

-- URLs
bad({ database = { url = "mysql://root:hunter2@db/x" } },
    'config.lua: database.url: must be a URL starting with postgres:// or postgresql:// (got string "mysql://root:***@db/x")',
    "bad database url, password hidden")
-- the URL is checked by the pool's own parser (core/pgurl.c), so the messages are its messages
bad({ database = { url = "postgres://h/db?connection_limit=0" } },
    'config.lua: database.url: connection_limit=0 is not an integer from 1 to 1000', "connection_limit range")
bad({ database = { url = "postgres://h/db?connection_limit=5000" } },
    'config.lua: database.url: connection_limit=5000 is not an integer from 1 to 1000', "connection_limit above the pool's cap")
bad({ database = { url = "postgres://h/db?pool_timeout=soon" } },
    'config.lua: database.url: pool_timeout=soon is not a duration (seconds, or e.g. 500ms / 20s)', "pool_timeout")
bad({ database = { url = "postgres://h/db?conection_limit=5" } },
    'config.lua: database.url: unknown parameter "conection_limit" (did you mean connection_limit?)', "misspelt parameter")
bad({ database = { url = "postgres://h/db?statement_timeout=-5" } },
    'config.lua: database.url: statement_timeout=-5 is not a duration (seconds, or e.g. 500ms / 20s; a bare number is milliseconds)',
    "every pool parameter is checked, not only two")
bad({ database = { replica_urls = "postgres://a/x, http://b/y" } },
    'config.lua: database.replica_urls[2]: must be a URL starting with postgres:// or postgresql:// (got string "http://b/y")',
    "bad replica in string")
bad({ database = { replica_urls = 5 } },
    "config.lua: database.replica_urls: must be an array of postgres:// URLs (or one comma-separated string) (got number 5)",
    "replica type")
bad({ redis = { url = "http://localhost:6379" } },
    'config.lua: redis.url: must start with redis://, rediss://, redis-sentinel://host:26379,.../master-name or unix://, or be an absolute socket path (got string "http://localhost:6379")',
    "bad redis url")
bad({ redis = { url = "redis://" } },
    'config.lua: redis.url: must start with redis://, rediss://, redis-sentinel://host:26379,.../master-name or unix://, or be an absolute socket path (got string "redis://")',
    "redis url without host")

-- http_client (app.http): defaults, paths resolved against config.lua, strict types
do
  local cfg = good({}, nil, "http_client defaults")
  local h = cfg.http_client
  ok(h.max_concurrent == 256 and h.queue_timeout == 5 and h.max_per_host == 64 and h.max_idle == 64 and
     h.timeout == 10 and h.connect_timeout == 3 and h.max_body == 10485760 and h.follow_redirects == false and
     h.max_redirects == 5 and h.verify_tls == true and h.decompress == true and h.user_agent == "sluice" and
     h.ca_file == nil and h.proxy == nil, "http_client defaults", show(h.max_concurrent))
  cfg = good({ http_client = { ca_file = "certs/ca.pem", proxy = "", timeout = 0 } }, { file = "/srv/app/config.lua" }, "http_client")
  eq(cfg.http_client.ca_file, "/srv/app/certs/ca.pem", "http_client.ca_file resolved")
  eq(cfg.http_client.proxy, nil, "http_client.proxy \"\" = unset")
  eq(cfg.http_client.timeout, 0, "http_client.timeout 0 = none")
  bad({ http_client = { timeout = "5" } }, 'config.lua: http_client.timeout: must be a number 0..86400 (got string "5")', "http_client.timeout")
  bad({ http_client = { max_concurrent = 0 } }, "config.lua: http_client.max_concurrent: must be an integer 1..1000000 (got number 0)", "http_client.max_concurrent")
  bad({ http_client = { timout = 5 } }, "config.lua: http_client.timout: unknown key (did you mean timeout?)", "http_client typo")
  -- proxy URLs: the schemes curl takes, a bare host:port, credentials; the password never shown
  for _, px in ipairs({ "http://proxy:3128", "https://u:p@proxy.internal", "socks5h://127.0.0.1:1080", "proxy:3128" }) do
    eq(good({ http_client = { proxy = px } }, nil, "http_client.proxy " .. px).http_client.proxy, px, "http_client.proxy " .. px)
  end
  bad({ http_client = { proxy = "ftp://u:hunter2@proxy" } },
    'config.lua: http_client.proxy: must be a proxy URL: http://host:port, https://..., socks5://..., socks5h://... (user:password@ allowed) (got string "ftp://u:***@proxy")',
    "http_client.proxy scheme")
  bad({ http_client = { proxy = "http://" } },
    'config.lua: http_client.proxy: must be a proxy URL: http://host:port, https://..., socks5://..., socks5h://... (user:password@ allowed) (got string "http://")',
    "http_client.proxy without host")
end

-- config.lua must return a table
do
  local cfg, errs = config.normalize(nil, { file = "x/config.lua" })
  ok(cfg == nil and errs[1] == "x/config.lua: must return a table (got nil)", "non-table config", errs and errs[1])
end

------------------------------------------------------------------------------------------ env
do
  local function lookup(t) return function(name) return t[name] end end
  eq(good({ port = 6000 }, { port_env = "8080" }, "PORT").port, 8080, "PORT overrides config port")
  eq(good({}, { port_env = " 9000 " }, "PORT spaces").port, 9000, "PORT with spaces")
  eq(good({ port = 6000 }, { port_env = "" }, "PORT empty").port, 6000, "empty PORT ignored")
  eq(good({}, { lookup_env = lookup({ PORT = "7000" }) }, "PORT via lookup").port, 7000, "PORT via lookup_env")
  bad({}, 'config.lua: port: PORT must be an integer 1..65535 (got string "abc")', "PORT invalid", { port_env = "abc" })
  bad({}, 'config.lua: port: PORT must be an integer 1..65535 (got string "0")', "PORT zero", { port_env = "0" })
  bad({}, 'config.lua: port: PORT must be an integer 1..65535 (got string "70000")', "PORT too big", { port_env = "70000" })
  bad({}, 'config.lua: port: PORT must be an integer 1..65535 (got string "80.5")', "PORT fraction", { port_env = "80.5" })
  local both = bad({ port = "x" }, 'config.lua: port: PORT must be an integer 1..65535 (got string "y")',
                   "bad config port and bad PORT", { port_env = "y" })
  eq(#both, 2, "both port problems reported")

  local p = good({ env = "development" }, { env = "production" }, "SLUICE_ENV")
  eq(p.env, "production", "SLUICE_ENV overrides config env")
  eq(p.log.access, "off", "SLUICE_ENV=production picks production defaults")
  eq(good({ env = "production" }, { env = "" }, "SLUICE_ENV empty").env, "production", "empty SLUICE_ENV ignored")
  eq(good({}, { lookup_env = lookup({ SLUICE_ENV = "production" }) }, "SLUICE_ENV lookup").env, "production",
     "SLUICE_ENV via lookup_env")
  bad({}, 'config.lua: env: SLUICE_ENV must be "production" or "development" (got string "staging")', "SLUICE_ENV invalid",
      { env = "staging" })

  local e = good({}, { lookup_env = lookup({ DATABASE_URL = "postgres://u@h/db", REDIS_URL = "redis://r:6379" }) }, "env urls")
  eq(e.database.url, "postgres://u@h/db", "DATABASE_URL used when config has no database.url")
  eq(e.redis.url, "redis://r:6379", "REDIS_URL used when config has no redis.url")
  eq(good({ database = { url = "postgres://cfg/db" } }, { lookup_env = lookup({ DATABASE_URL = "postgres://env/db" }) },
          "config url wins").database.url, "postgres://cfg/db", "explicit database.url wins over DATABASE_URL")
  eq(good({}, { lookup_env = lookup({ DATABASE_URL = "" }) }, "empty env url").database.url, nil, "empty DATABASE_URL ignored")
  bad({}, 'config.lua: database.url: must be a URL starting with postgres:// or postgresql:// (got string "mysql://a:***@b/c") '
       .. "[from environment variable DATABASE_URL]", "bad DATABASE_URL",
      { file = "config.lua", lookup_env = lookup({ DATABASE_URL = "mysql://a:pw@b/c" }) })
end

------------------------------------------------------------------------------------------ paths
do
  local c = good({ scripts = { "scripts/app.lua", "./lib/x.lua", "/opt/y.lua", "a//b.lua" }, log = { file = "logs/s.log" } },
                 { file = "/srv/app/config.lua" }, "absolute config dir")
  ok(deep_eq(c.scripts, { "/srv/app/scripts/app.lua", "/srv/app/lib/x.lua", "/opt/y.lua", "/srv/app/a/b.lua" }),
     "scripts resolved against /srv/app", table.concat(c.scripts or {}, " "))
  eq(c.log.file, "/srv/app/logs/s.log", "log.file resolved")
  eq(good({}, { file = "/srv/app/config.lua" }, "default script").scripts[1], "/srv/app/scripts/app.lua",
     "default script resolved too")
  eq(good({}, { file = "deploy/prod/config.lua" }, "relative dir").scripts[1], "deploy/prod/scripts/app.lua",
     "relative config dir")
  eq(good({}, { file = "./config.lua" }, "dot dir").scripts[1], "scripts/app.lua", "./config.lua")
  eq(good({}, { file = "config.lua" }, "no dir").scripts[1], "scripts/app.lua", "config.lua in cwd")
  eq(good({ scripts = { "../shared/x.lua" } }, { file = "/srv/app/config.lua" }, "dotdot").scripts[1],
     "/srv/app/../shared/x.lua", ".. kept lexically")
  eq(good({}, { file = "/config.lua" }, "root").scripts[1], "/scripts/app.lua", "config in /")
  ok(deep_eq(good({ scripts = {} }, nil, "no scripts").scripts, {}), "empty scripts list allowed")
end

------------------------------------------------------------------------------------------ ratelimit replace / false
do
  local off = good({ ratelimit = false }, nil, "ratelimit false")
  ok(type(off.ratelimit) == "table" and next(off.ratelimit) == nil, "ratelimit = false normalizes to {}")
  eq(config.match_policy(off, "/anything"), nil, "no policy when disabled")
  local only = good({ ratelimit = { login = { limit = 5, window = 60, paths = { "/login" } } } }, nil, "replace")
  eq(config.match_policy(only, "/login"), "login", "user policy matches")
  eq(config.match_policy(only, "/metrics"), nil, "default monitoring policy gone")
  eq(config.match_policy(only, "/"), nil, "default api policy gone")
  eq(only.ratelimit.login.key, "ip", "policy key default")
  local empty = good({ ratelimit = {} }, nil, "empty ratelimit")
  ok(next(empty.ratelimit) == nil, "ratelimit = {} means no policies")
end

------------------------------------------------------------------------------------------ match_policy
do
  local d = config.defaults()
  eq(config.match_policy(d, "/"), "api", "root -> api")
  eq(config.match_policy(d, "/users/1"), "api", "any path -> api")
  eq(config.match_policy(d, "/metrics"), "monitoring", "/metrics -> monitoring")
  eq(config.match_policy(d, "/health"), "monitoring", "/health -> monitoring")
  eq(config.match_policy(d, "/ready?verbose=1"), "monitoring", "query string ignored")
  eq(config.match_policy(d, "/metricsx"), "api", "segment boundary: /metricsx is not /metrics")
  eq(config.match_policy(d, "/metrics/sub"), "monitoring", "/metrics/sub under /metrics")

  local c = good({ ratelimit = {
    all = { limit = 100, window = 60, paths = { "/" } },
    api = { limit = 50, window = 60, paths = { "/api" } },
    v2 = { limit = 10, window = 60, paths = { "/api/v2" } },
    dir = { limit = 10, window = 60, paths = { "/files/" } },
    login_post = { limit = 5, window = 60, paths = { "/api/login" }, methods = { "POST" } },
    login = { limit = 20, window = 60, paths = { "/api/login" } },
  } }, nil, "match config")
  eq(config.match_policy(c, "/api"), "api", "exact prefix")
  eq(config.match_policy(c, "/api/users"), "api", "under prefix")
  eq(config.match_policy(c, "/apiary"), "all", "/api does not match /apiary")
  eq(config.match_policy(c, "/api/v2/x"), "v2", "longest prefix wins")
  eq(config.match_policy(c, "/api/v2"), "v2", "longest prefix exact")
  eq(config.match_policy(c, "/api/v20"), "api", "/api/v2 does not match /api/v20")
  eq(config.match_policy(c, "/files/a.txt"), "dir", "trailing-slash prefix")
  eq(config.match_policy(c, "/files"), "all", "/files/ does not match /files")
  eq(config.match_policy(c, "/api/login", "POST"), "login_post", "method-specific policy wins")
  eq(config.match_policy(c, "/api/login", "post"), "login_post", "method case-insensitive")
  eq(config.match_policy(c, "/api/login", "GET"), "login", "other methods fall to the general policy")
  eq(config.match_policy(c, "/api/login"), "login", "no method: method-restricted policies skipped")
  local routes = config.policy_routes(c)
  eq(routes[1].path, "/api/login", "policy_routes longest first")
  eq(routes[1].policy, "login_post", "policy_routes: method-specific first at equal length")
  eq(routes[#routes].path, "/", "policy_routes: root last")
end

------------------------------------------------------------------------------------------ many errors, order
do
  local cfg, errs = norm({
    scripts = { "a", "", "c", "d", "e", "f", "g", "h", "i", "" },
    zeta = 1, port = "x", alpha = 1,
    limits = { body_size = "ten", header_size = 1 },
  })
  ok(cfg == nil, "multiple errors rejected")
  local want = {
    "config.lua: alpha: unknown key",
    "config.lua: limits.body_size: must be an integer 1..2147483648 (got string \"ten\")",
    "config.lua: limits.header_size: must be an integer 1024..1048576 (got number 1)",
    "config.lua: port: must be an integer 1..65535 (got string \"x\")",
    "config.lua: scripts[2]: must be a non-empty string (got string \"\")",
    "config.lua: scripts[10]: must be a non-empty string (got string \"\")",
    "config.lua: zeta: unknown key",
  }
  ok(deep_eq(errs, want), "every problem reported, sorted by key path (indices numerically)",
     "got:\n        " .. table.concat(errs or {}, "\n        "))
  local _, again = norm({ scripts = { "a", "", "c", "d", "e", "f", "g", "h", "i", "" }, zeta = 1, port = "x", alpha = 1,
                          limits = { body_size = "ten", header_size = 1 } })
  ok(deep_eq(errs, again), "deterministic")
end

------------------------------------------------------------------------------------------ load / restart_keys
do
  local dir = os.tmpname()
  os.remove(dir)
  local f = dir .. "-config.lua"
  local h = assert(io.open(f, "w"))
  h:write('return { port = 5050, limits = { body_size = 2048 }, app = { name = "x" } }\n')
  h:close()
  local cfg, errs = config.load(f)
  ok(cfg ~= nil and cfg.port == 5050 and cfg.limits.body_size == 2048 and cfg.app.name == "x", "load() a good file",
     errs and errs[1])
  h = assert(io.open(f, "w"))
  h:write("return {\n  port = 5050\n  workers = 2,\n}\n")
  h:close()
  cfg, errs = config.load(f)
  ok(cfg == nil and errs[1]:find(f .. ":3:", 1, true) == 1, "load() syntax error as file:line:", errs and errs[1])
  h = assert(io.open(f, "w"))
  h:write("local x = nil\nreturn { port = x.y }\n")
  h:close()
  cfg, errs = config.load(f)
  ok(cfg == nil and errs[1]:find(f .. ":2:", 1, true) == 1, "load() runtime error as file:line:", errs and errs[1])
  h = assert(io.open(f, "w"))
  h:write("return { prot = 1 }\n")
  h:close()
  cfg, errs = config.load(f)
  ok(cfg == nil and errs[1] == f .. ": prot: unknown key (did you mean port?)", "load() schema error names the file",
     errs and errs[1])
  os.remove(f)

  local a = config.defaults()
  local b = good({ port = 1, workers = 2, limits = { body_size = 5 } }, nil, "restart")
  ok(deep_eq(config.restart_keys(a, b), { "port", "workers" }), "restart_keys")
  ok(deep_eq(config.restart_keys(a, config.defaults()), {}), "restart_keys none")
end

-- the handler toolkit's keys: log.format, password, session
do
  local d = config.defaults()
  eq(d.log.format, "text", "log.format default")
  eq(d.password.ops_limit, 2, "password.ops_limit default")
  eq(d.password.mem_limit_kb, 19456, "password.mem_limit_kb default")
  eq(d.password.threads, 2, "password.threads default")
  eq(d.session.store, "cache", "session.store default")
  eq(d.session.cookie, "sluice_sid", "session.cookie default")
  eq(d.session.keys, nil, "no session keys by default")
  eq(d.session.secure, false, "session.secure in development")
  eq(config.defaults("production").session.secure, true, "session.secure in production")
  local k32, k40 = string.rep("a", 32), string.rep("b", 40)
  local c = good({ session = { keys = { k40, k32 } } }, nil, "two keys")
  ok(deep_eq(c.session.keys, { k40, k32 }), "keys kept in order")
  c = good({}, { file = "config.lua", lookup_env = function(n) return n == "SLUICE_SESSION_KEYS" and (k40 .. "," .. k32) or nil end }, "keys from env")
  ok(deep_eq(c.session.keys, { k40, k32 }), "SLUICE_SESSION_KEYS is comma-separated")
  bad({ session = { keys = { "short" } } },
      "config.lua: session.keys[1]: must be a string of at least 32 bytes (got 5 bytes); make one with: head -c 32 /dev/urandom | base64",
      "short key (and its value is not shown)")
  bad({ session = { keys = {} } }, "config.lua: session.keys: must be an array of 1..4 key strings, newest first (or a comma-separated string)", "no keys")
  bad({ session = { store = "cookie" } }, 'config.lua: session.keys: required when session.store = "cookie" (or set SLUICE_SESSION_KEYS)', "cookie store without keys")
  bad({ session = { samesite = "None", secure = false } },
      'config.lua: session.secure: must be true when session.samesite = "None" (browsers drop the cookie otherwise)', "SameSite=None needs Secure")
  bad({ session = { cookie = "bad name" } }, "config.lua: session.cookie: must be a cookie name (letters, digits and !#$%&'*+.^_`|~-) (got string \"bad name\")", "cookie name")
  bad({ password = { mem_limit_kb = 4 } }, "config.lua: password.mem_limit_kb: must be an integer 8..4194304 (got number 4)", "password memory")
  bad({ password = { ops_limit = 0 } }, "config.lua: password.ops_limit: must be an integer 1..100 (got number 0)", "password passes")
  bad({ log = { format = "JSON" } }, 'config.lua: log.format: must be one of "text", "json" (got string "JSON") (did you mean "json"?)', "log.format")
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
