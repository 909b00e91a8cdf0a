/* rbus_scripts.c: the Lua scripts the Redis bus runs inside Redis (EVALSHA; see enum rbus_script
 * in rbus.h for each one's keys and arguments). Part of the rbus module: data only. */
#include "rbus.h"

/* Ids: the shared counter, raised to the caller's floor, so an id is always above every id
 * any instance's hub has issued (instances bump it with their own floor when they connect).
 * The stream is trimmed with XDEL (not MAXLEN) so max-deleted-entry-id tells replay whether
 * events after a client's Last-Event-ID were dropped. PUBLISH inside the script: delivery
 * order on every subscriber equals id order, whichever instance published. */
const char *const rbus_script_src[RBUS_NSCRIPTS] = {
    [RBUS_PUBLISH] =
        "local id\n"
        "if ARGV[2] ~= '' then\n"
        "  id = tonumber(ARGV[2])\n"
        "  local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
        "  if id <= cur then return redis.error_reply('id must be greater than the last id issued') end\n"
        "  redis.call('SET', KEYS[1], ARGV[2])\n"
        "else\n"
        "  id = redis.call('INCR', KEYS[1])\n"
        "  local floor = tonumber(ARGV[1])\n"
        "  if id < floor then id = floor; redis.call('SET', KEYS[1], string.format('%.0f', id)) end\n"
        "end\n"
        "local sid = string.format('%.0f', id)\n"
        "local ml = tonumber(ARGV[8])\n"
        "if ml > 0 then\n"
        "  local ok = redis.pcall('XADD', KEYS[2], sid .. '-0', 'e', ARGV[4], 'd', ARGV[5], 'r', ARGV[6])\n"
        "  local n = redis.call('XLEN', KEYS[2])\n"
        "  if n > ml then\n"
        "    local old = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', n - ml)\n"
        "    for i = 1, #old do redis.call('XDEL', KEYS[2], old[i][1]) end\n"
        "  end\n"
        "  redis.call('PEXPIRE', KEYS[2], ARGV[10])\n"
        "end\n"
        "redis.call('PUBLISH', ARGV[9], sid .. ' ' .. #ARGV[3] .. ' ' .. #ARGV[4] .. ' ' .. ARGV[6] .. ' ' .. ARGV[7]\n"
        "  .. '\\n' .. ARGV[3] .. ARGV[4] .. ARGV[5])\n"
        "return sid\n",
    /* GCRA exactly as ratelimit.c, on Redis's clock. TAT is stored as "sec ns" because a
     * nanosecond timestamp does not fit a double; only differences (< 104 days) are formed. */
    [RBUS_GCRA] =
        "local T, B, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
        "local BT = B * T\n"
        "local now_s, now_ns\n"
        "if ARGV[4] then\n"                 /* tests pass the clock (ms) to compare with ratelimit.c */
        "  local ms = tonumber(ARGV[4]); now_s = math.floor(ms / 1000); now_ns = (ms - now_s * 1000) * 1000000\n"
        "else\n"
        "  local t = redis.call('TIME'); now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000\n"
        "end\n"
        "local function idiv(a, b)\n"
        "  local q = math.floor(a / b)\n"
        "  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end\n"
        "  return q\n"
        "end\n"
        "local function ceil_ms(x) local q = idiv(x, 1000000); if q * 1000000 < x then q = q + 1 end; return q end\n"
        "local function store(nd)\n"
        "  local tot = now_ns + nd\n"
        "  local ds = idiv(tot, 1000000000)\n"
        "  redis.call('SET', KEYS[1], string.format('%.0f %.0f', now_s + ds, tot - ds * 1000000000), 'PX', ceil_ms(nd) + 1000)\n"
        "end\n"
        "local d = 0\n"
        "local v = redis.call('GET', KEYS[1])\n"
        "if v then\n"
        "  local s, ns = string.match(v, '^(%d+) (%d+)$')\n"
        "  if s then d = (tonumber(s) - now_s) * 1000000000 + (tonumber(ns) - now_ns) end\n"
        "end\n"
        "if d > BT then d = BT; if v and cost > 0 then store(d) end end\n"
        "local base = d > 0 and d or 0\n"
        "if cost > B then return {0, idiv(BT - base, T), -1, ceil_ms(base)} end\n"
        "local nd = base + cost * T\n"
        "if nd > BT then return {0, idiv(BT - base, T), ceil_ms(nd - BT), ceil_ms(base)} end\n"
        "if cost > 0 then store(nd) end\n"
        "return {1, idiv(BT - nd, T), 0, ceil_ms(nd)}\n",
    /* Caps count live streams of every instance: members expire unless refreshed at heartbeat,
     * so a crashed instance's streams age out. With a last id, the missed events come back too. */
    [RBUS_SSE_ADMIT] =
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local exp = now + tonumber(ARGV[2])\n"
        "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
        "local maxt = tonumber(ARGV[3])\n"
        "if maxt > 0 and redis.call('ZCARD', KEYS[1]) >= maxt then return {1} end\n"
        "if ARGV[5] == '1' then\n"
        "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
        "  local pu = tonumber(ARGV[4])\n"
        "  if pu > 0 and redis.call('ZCARD', KEYS[2]) >= pu then return {2} end\n"
        "  redis.call('ZADD', KEYS[2], exp, ARGV[1])\n"
        "  redis.call('PEXPIRE', KEYS[2], ARGV[2])\n"
        "end\n"
        "redis.call('ZADD', KEYS[1], exp, ARGV[1])\n"
        "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
        "local out = {0}\n"
        "if ARGV[6] ~= '' then\n"
        "  local last = tonumber(ARGV[6])\n"
        "  for i = 3, #KEYS do\n"
        "    local gap = 0\n"
        "    local info = redis.pcall('XINFO', 'STREAM', KEYS[i])\n"
        "    if type(info) == 'table' and not info.err then\n"
        "      for j = 1, #info - 1, 2 do\n"
        "        if info[j] == 'max-deleted-entry-id' then\n"
        "          local md = tonumber(string.match(info[j + 1], '^(%d+)'))\n"
        "          if md and md > last then gap = 1 end\n"
        "        end\n"
        "      end\n"
        "      out[#out + 1] = gap\n"
        "      out[#out + 1] = redis.call('XRANGE', KEYS[i], '(' .. ARGV[6] .. '-0', '+', 'COUNT', ARGV[7])\n"
        "    else\n"
        "      out[#out + 1] = 0\n"
        "      out[#out + 1] = {}\n"
        "    end\n"
        "  end\n"
        "  out[#out + 1] = redis.call('GET', ARGV[8]) or ''\n"    /* the history's epoch (RBUS_CATCHUP) */
        "end\n"
        "return out\n",
    [RBUS_SSE_TOUCH] =
        "if ARGV[3] == '1' then\n"
        "  redis.call('ZREM', KEYS[1], ARGV[1])\n"
        "  if ARGV[4] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end\n"
        "  return 0\n"
        "end\n"
        "local t = redis.call('TIME')\n"
        "local exp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])\n"
        "redis.call('ZADD', KEYS[1], exp, ARGV[1])\n"
        "redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
        "if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], exp, ARGV[1]); redis.call('PEXPIRE', KEYS[2], ARGV[2]) end\n"
        "return 1\n",
    [RBUS_FLOOR] =
        "local c = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
        "if c < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end\n"
        "return 1\n",
    [RBUS_INCR] =
        "local v\n"
        "if string.find(ARGV[1], '[%.eE]') then v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])\n"
        "else v = redis.call('INCRBY', KEYS[1], ARGV[1]) end\n"
        "if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
        "return v\n",
    /* After the subscriber was cut off: what the streams hold past the last id this instance
     * saw. The epoch key names Redis's history: a Redis that lost its data (restart without
     * persistence) gets a new one, so the instance knows the streams no longer reach back. */
    [RBUS_CATCHUP] =
        "local ep = redis.call('GET', KEYS[1])\n"
        "if not ep then ep = ARGV[3]; redis.call('SET', KEYS[1], ep) end\n"
        "local out = {ep, redis.call('GET', KEYS[2]) or '0'}\n"
        "local last = tonumber(ARGV[1])\n"
        "for i = 3, #KEYS do\n"
        "  local gap = 0\n"
        "  local info = redis.pcall('XINFO', 'STREAM', KEYS[i])\n"
        "  if type(info) == 'table' and not info.err then\n"
        "    for j = 1, #info - 1, 2 do\n"
        "      if info[j] == 'max-deleted-entry-id' then\n"
        "        local md = tonumber(string.match(info[j + 1], '^(%d+)'))\n"
        "        if md and md > last then gap = 1 end\n"
        "      end\n"
        "    end\n"
        "    local ents = redis.call('XRANGE', KEYS[i], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])\n"
        "    if #ents >= tonumber(ARGV[2]) then gap = 1 end\n"
        "    out[#out + 1] = gap\n"
        "    out[#out + 1] = ents\n"
        "  else\n"
        "    out[#out + 1] = 0\n"
        "    out[#out + 1] = {}\n"
        "  end\n"
        "end\n"
        "return out\n",
};
