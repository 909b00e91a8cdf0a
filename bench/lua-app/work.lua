-- work.lua: the three Lua-heavy handlers of bench/lua.sh, shared verbatim by sluice (app.lua
-- requires it) and nginx+lua (bench/nginx/lua.conf: init_by_lua_block requires it and
-- content_by_lua_block calls it), so both servers run exactly the same Lua.
local cjson = require "cjson"

local M = {}

-- (a) 200 small tables, sorted with a Lua comparator, a field summed.
function M.sort(seed)
  local t = {}
  for i = 1, 200 do
    t[i] = { id = i, score = (i * 7919 + seed) % 1000, weight = i % 7 + 1 }
  end
  table.sort(t, function(a, b)
    if a.score ~= b.score then return a.score < b.score end
    return a.id < b.id
  end)
  local sum = 0
  for i = 1, #t do sum = sum + t[i].score * t[i].weight end
  return "sum=" .. sum .. " first=" .. t[1].id .. " last=" .. t[#t].id .. "\n"
end

-- (b) string work over a ~10 KB text body: escape it, count and collect words, squeeze spaces,
-- build a summary.
local ENT = { ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;" }
function M.text(body)
  local esc = body:gsub('[<>&"]', ENT)
  local n, long, seen = 0, {}, {}
  for w in esc:gmatch("%a+") do
    n = n + 1
    if #w > 6 then
      local lw = w:lower()
      if not seen[lw] then seen[lw] = true; long[#long + 1] = lw end
    end
  end
  local squeezed, gaps = esc:gsub("%s+", " ")
  local parts = {}
  for i = 1, #long, 4 do parts[#parts + 1] = long[i]:sub(1, 3):upper() .. long[i]:sub(4) end
  return string.format("len=%d squeezed=%d gaps=%d words=%d long=%d %s\n", #esc, #squeezed, gaps, n, #long,
                       table.concat(parts, ","))
end

-- (c) JSON decode-modify-encode of a ~5 KB document.
function M.json(body)
  local doc = cjson.decode(body)
  local total, kept = 0, {}
  for _, it in ipairs(doc.items) do
    it.total = it.price * it.qty
    total = total + it.total
    it.tags[#it.tags + 1] = it.qty > 5 and "bulk" or "single"
    if it.active then kept[#kept + 1] = it end
  end
  doc.items = kept
  doc.summary = { count = #kept, total = total, version = (doc.version or 0) + 1 }
  doc.owner.name = doc.owner.name:upper()
  return cjson.encode(doc)
end

return M
