-- paced.lua: wrk script that waits a fixed time between a connection's requests, for latency
-- probes that should not saturate the server themselves. Usage: wrk -s paced.lua URL -- MS
local ms = 2
function init(args) ms = tonumber(args[1]) or ms end
function delay() return ms end
