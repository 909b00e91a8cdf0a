-- clients.lua: wrk script sending a different X-Client header on every request, cycling through
-- NKEYS values, DEPTH requests per write (HTTP/1.1 pipelining when DEPTH > 1).
-- Usage: wrk -s bench/overhead-app/clients.lua URL -- [depth [nkeys]]   (defaults 1, 10000)
-- All batches are built in init so that wrk spends no time formatting requests.
local batches, nb, i = {}, 0, 0

function init(args)
  local depth = tonumber(args[1]) or 1
  local nkeys = tonumber(args[2]) or 10000
  -- nkeys batches of depth requests each: every key appears depth times per cycle, and
  -- consecutive requests always carry different keys
  for b = 0, nkeys - 1 do
    local parts = {}
    for d = 0, depth - 1 do
      local k = (b * depth + d) % nkeys
      parts[#parts + 1] = wrk.format(nil, wrk.path, { ["X-Client"] = "client-" .. k })
    end
    batches[b + 1] = table.concat(parts)
  end
  nb = nkeys
end

function request()
  i = i % nb + 1
  return batches[i]
end
