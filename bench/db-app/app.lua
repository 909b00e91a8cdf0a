-- app.lua for bench/db.sh: a primary-key select on pgbench_accounts through the pool.
local app = require "sluice"

app.get("/account/:aid", function(req)
  local rows = app.db.query("select aid, abalance from pgbench_accounts where aid = $1", req.params.aid)
  if not rows[1] then return { status = 404, json = { error = "not found" } } end
  return { json = rows[1] }
end)
