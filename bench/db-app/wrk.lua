-- wrk.lua: random accounts of a scale-10 pgbench database (1,000,000 rows).
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/account/" .. math.random(1, 1000000))
end
