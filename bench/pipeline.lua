-- pipeline.lua: wrk script sending DEPTH requests per write (HTTP/1.1 pipelining).
-- Usage: wrk -s bench/pipeline.lua URL -- [depth]   (default depth 16)
-- wrk counts each response, so requests/s is the pipelined request rate.
local depth = 16
local batch

function init(args)
  depth = tonumber(args[1]) or depth
  local one = wrk.format(nil, wrk.path)
  local parts = {}
  for i = 1, depth do parts[i] = one end
  batch = table.concat(parts)
end

function request()
  return batch
end
