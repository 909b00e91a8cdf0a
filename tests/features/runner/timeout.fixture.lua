-- run with --timeout 1: two tests that never finish, then one that passes.
describe("timeouts", function()
  it("never returns", function()
    while true do app.sleep(0.01) end
  end)
  it("waits for an event nobody publishes", function()
    local s = subscribe("/events")
    s:next_event(60)
  end)
  it("runs after them", function()
    assert.are.equal(200, request("GET", "/ok").status)
  end)
end)
describe("async", function()
  it("never calls done", function(done) end) -- MARK:never
end)
