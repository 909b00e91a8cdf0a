-- luassert mocks as busted users write them.
describe("mocks", function()
  local function make()
    return {
      name = "api",
      get = function(id) return "item " .. id end,
      nested = { put = function() return "put" end },
    }
  end

  it("mock(t) spies on every function, deeply", function()
    local api = make()
    local m = mock(api)
    assert.equal("item 3", m.get(3))
    assert.equal("put", m.nested.put())
    assert.spy(m.get).was.called_with(3)
    assert.spy(m.nested.put).was.called(1)
    assert.equal("api", m.name)
    mock.revert(m)
    assert.is_false(spy.is_spy(api.get))
  end)

  it("mock(t, true) stubs every function", function()
    local m = mock(make(), true)
    assert.is_nil(m.get(3))
    assert.stub(m.get).was.called(1)
    mock.revert(m)
  end)

  it("mock.clear forgets the calls of every spy", function()
    local m = mock(make())
    m.get(1)
    m.nested.put()
    mock.clear(m)
    assert.spy(m.get).was_not.called()
    assert.spy(m.nested.put).was_not.called()
    mock.revert(m)
  end)
end)
