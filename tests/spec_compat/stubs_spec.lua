-- luassert stubs as busted users write them (each test reverts its stubs itself, as busted 2.1
-- needs; sluice test would also undo them after the test).
describe("stubs", function()
  local t
  before_each(function()
    t = { fetch = function() return "real" end, value = function() return 1 end }
  end)

  it("stub(t, key) replaces with a function returning nothing", function()
    local s = stub(t, "fetch")
    assert.is_nil(t.fetch())
    assert.stub(s).was.called(1)
    s:revert()
    assert.equal("real", t.fetch())
  end)

  it("stub(t, key, values...) returns them", function()
    local s = stub(t, "fetch", "a", "b")
    local x, y = t.fetch()
    assert.equal("a", x)
    assert.equal("b", y)
    s:revert()
  end)

  it("returns and invokes", function()
    local s = stub(t, "fetch").returns("canned")
    assert.equal("canned", t.fetch())
    s.invokes(function(n) return n * 2 end)
    assert.equal(10, t.fetch(5))
    s.by_default.returns("default")
    assert.equal("default", t.fetch())
    s:revert()
  end)

  it("on_call_with answers per argument list", function()
    local s = stub(t, "fetch")
    s.on_call_with("a").returns(1)
    s.on_call_with(match.is_number()).returns(2)
    s.by_default.returns(0)
    assert.equal(1, t.fetch("a"))
    assert.equal(2, t.fetch(42))
    assert.equal(0, t.fetch("z"))
    assert.stub(s).was.called(3)
    s:revert()
  end)

  it("stub.new() is a blank stub", function()
    local s = stub.new()
    s(1, 2)
    assert.stub(s).was.called_with(1, 2)
  end)

  it("a stub on a missing key is removed again by revert", function()
    local s = stub(t, "missing").returns(true)
    assert.is_true(t.missing())
    s:revert()
    assert.is_nil(t.missing)
  end)

  it("refuses a non-function value", function()
    t.data = 5
    assert.has_error(function() stub(t, "data") end)
  end)
end)
