-- helpers.lua: shared by the feature suites (loaded with dofile from each *.test.lua).
-- Load it into the spec file's environment: setfenv(loadfile(".../helpers.lua"), getfenv(1))()
local H = {}

-- Known runtime bugs: the spec is written and runs when SLUICE_FEATURES_STRICT=1; otherwise it
-- is reported as `skip` with the bug's description so the suite stays green. A spec that hangs
-- the whole process while the bug is there (hangs = true) runs only with SLUICE_FEATURES_STRICT=2.
function H.bug(name, what, fn, hangs)
  local strict = os.getenv("SLUICE_FEATURES_STRICT")
  if strict == "2" or (strict == "1" and not hangs) then
    it(name .. " [BUG: " .. what .. "]", fn)
  else
    pending(name .. " [BUG: " .. what .. "]")
  end
end

-- A JSON error answer from the core: exact status and body.
function H.is_error(res, status, message)
  assert.are.equal(status, res.status, "status (body: " .. tostring(res.body) .. ")")
  assert.matches("^application/json", res.headers["content-type"] or "")
  assert.are.same({ error = message, status = status }, res:json())
end

-- The server still answers normally after a bad request.
function H.still_works(path)
  local res = request("GET", path or "/ok")
  assert.are.equal(200, res.status, "the next request must still work")
  return res
end

return H
