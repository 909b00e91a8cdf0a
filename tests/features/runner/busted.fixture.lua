-- busted's language on the live runtime: done() from event-loop callbacks, a handler's error in
-- the report, stubs undone after each test, pending() inside a test.
describe("on the event loop", function()
  it("waits for done() from a timer", function(done)
    app.timer(0.01, function() done() end)
  end)

  it("signs off tokens from several callbacks", function(done)
    done:wait_unordered("a", "b")
    app.timer(0.02, function() done("b") end)
    app.timer(0.01, function() done("a") end)
  end)

  it("reports the handler's error with its file:line", function()
    assert.status(200, request("GET", "/boom")) -- MARK:status
  end)

  it("stubs a runtime function for one test", function()
    local s = stub(app, "publish").returns(42)
    assert.equal(42, app.publish("room", { data = "x" }))
    assert.stub(s).was.called_with("room", match.is_table())
  end)

  it("gets the real function back in the next test", function()
    assert.is_false(require("luassert.spy").is_spy(app.publish))
  end)

  it("can be left pending from inside", function()
    pending("needs the v2 API")
  end)
end)

describe("a failing callback", function()
  it("fails the waiting test at once", function(done)
    app.timer(0.01, function()
      assert.are.equal(1, 2) -- MARK:cb
      done()
    end)
  end)
end)
