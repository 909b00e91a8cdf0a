-- luassert matchers as busted users write them.
describe("matchers", function()
  it("type matchers", function()
    local s = spy.new(function() end)
    s(1, "x", {}, nil, true, print)
    assert.spy(s).was.called_with(match.is_number(), match.is_string(), match.is_table(),
      match.is_nil(), match.is_boolean(), match.is_function())
    assert.spy(s).was.called_with(match._, match._, match._, match._, match._, match._)
  end)

  it("value matchers", function()
    local s = spy.new(function() end)
    local ref = {}
    s(ref, { a = 1 }, "hello", 3.01, true, false)
    assert.spy(s).was.called_with(match.is_ref(ref), match.is_same({ a = 1 }), match.matches("^hel"),
      match.is_near(3, 0.1), match.is_true(), match.is_false())
    assert.spy(s).was_not.called_with(match.is_ref({}), match._, match._, match._, match._, match._)
  end)

  it("truthy, falsy, equal, unique", function()
    local s = spy.new(function() end)
    s(0, nil, "same", { 1, 2 })
    assert.spy(s).was.called_with(match.is_truthy(), match.is_falsy(), match.is_equal("same"), match.is_unique())
  end)

  it("negated matchers", function()
    local s = spy.new(function() end)
    s("x")
    assert.spy(s).was.called_with(match.is_not.number())
    assert.spy(s).was.called_with(match.is_not_nil())
    assert.spy(s).was_not.called_with(match.is_not.string())
  end)

  it("composite matchers", function()
    local s = spy.new(function() end)
    s(5)
    assert.spy(s).was.called_with(match.all_of(match.is_number(), match.is_near(5, 1)))
    assert.spy(s).was.called_with(match.any_of(match.is_string(), match.is_number()))
    assert.spy(s).was.called_with(match.none_of(match.is_string(), match.is_table()))
  end)

  it("matchers work on their own and in stubs", function()
    assert.is_true(match.is_number()(1))
    assert.is_false(match.is_number()("1"))
    assert.is_true(match.is_matcher(match._))
    local t = { f = function() end }
    local st = stub(t, "f")
    st.on_call_with(match.is_string()).returns("a string")
    assert.equal("a string", t.f("x"))
    assert.is_nil(t.f(1))
    st:revert()
  end)

  it("a custom matcher registered the luassert way", function()
    local function is_even(state, arguments)
      return function(value) return type(value) == "number" and value % 2 == 0 end
    end
    assert:register("matcher", "even", is_even)
    local s = spy.new(function() end)
    s(4)
    assert.spy(s).was.called_with(match.is_even())
    assert.spy(s).was_not.called_with(match.is_not.even())
    assert:unregister("matcher", "even")
  end)
end)
