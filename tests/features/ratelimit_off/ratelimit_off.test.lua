-- ratelimit = false: nothing is limited, no RateLimit fields are sent.
describe("ratelimit = false", function()
  it("admits far more than the default policies would, without RateLimit fields", function()
    for i = 1, 400 do
      local res = request("GET", i <= 320 and "/health" or "/api/items")   -- default monitoring: 300/60 s
      assert.are.equal(200, res.status, "request " .. i)
      assert.is_nil(res.headers["ratelimit"])
      assert.is_nil(res.headers["ratelimit-policy"])
    end
  end)
end)
