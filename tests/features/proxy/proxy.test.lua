-- trusted_proxies = { "127.0.0.1" }: X-Forwarded-For and X-Request-Id from the proxy are believed.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

local function get(path, xff, extra)
  local h = extra or {}
  h["x-forwarded-for"] = xff
  return request("GET", path, { headers = h })
end

describe("behind a trusted proxy", function()
  it("req.ip is the client named by X-Forwarded-For", function()
    assert.are.same("203.0.113.5", get("/api/ip", "203.0.113.5"):json().ip)
    -- the rightmost untrusted entry is the client; what the client wrote on the left is ignored
    assert.are.same("203.0.113.6", get("/api/ip", "6.6.6.6, 203.0.113.6"):json().ip)
    -- a malformed entry stops the walk at the proxy
    assert.are.same("127.0.0.1", get("/api/ip", "1.1.1.1, garbage"):json().ip)
    -- no header: the proxy itself
    assert.are.same("127.0.0.1", get("/api/ip"):json().ip)
  end)

  it("rate-limits each forwarded client separately", function()
    for _ = 1, 2 do assert.are.equal(200, get("/api/ip", "203.0.113.1").status) end
    local res = get("/api/ip", "203.0.113.1")
    assert.are.equal(429, res.status)
    assert.are.equal("rate limit exceeded", res:json().error)
    for _ = 1, 2 do assert.are.equal(200, get("/api/ip", "203.0.113.2").status) end
    assert.are.equal(200, get("/api/ip").status, "the proxy's own address is another key")
    H.still_works("/ok")
  end)

  it("keeps an X-Request-Id sent by the proxy, and req.id equals it", function()
    local res = get("/api/ip", "203.0.113.9", { ["x-request-id"] = "edge-42.abc" })
    assert.are.equal("edge-42.abc", res.headers["x-request-id"])
    assert.are.equal("edge-42.abc", res:json().id)
  end)

  it("replaces a malformed X-Request-Id even from the proxy", function()
    local res = get("/api/ip", nil, { ["x-request-id"] = "has space" })
    assert.are_not.equal("has space", res.headers["x-request-id"])
    assert.matches("^%x+%-%x+$", res.headers["x-request-id"])
    assert.are.equal(res.headers["x-request-id"], res:json().id)
  end)
end)
