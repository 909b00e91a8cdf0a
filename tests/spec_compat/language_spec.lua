-- busted's language: blocks, aliases, hooks and their order, finally, pending, insulate/expose.
local log = {}
local function rec(s) return function() log[#log + 1] = s end end

describe("blocks and hooks", function()
  setup(rec("setup"))
  teardown(rec("teardown"))
  before_each(rec("before"))
  after_each(rec("after"))

  it("runs a test", function() rec("it 1")() end)

  context("a context is a describe", function()
    lazy_setup(rec("lazy_setup"))
    lazy_teardown(rec("lazy_teardown"))
    before_each(rec("before inner"))
    after_each(rec("after inner"))
    spec("spec is it", function() rec("spec")() end)
    test("test is it", function() rec("test")() end)
  end)

  it("runs finally after the test", function()
    finally(rec("finally"))
    rec("it 2")()
  end)
end)

describe("the order", function()
  it("is setup, before, test, after, ... and lazy_setup once before the first test", function()
    assert.same({
      "setup", "before", "it 1", "after",
      "lazy_setup", "before", "before inner", "spec", "after inner", "after",
      "before", "before inner", "test", "after inner", "after", "lazy_teardown",
      "before", "it 2", "finally", "after", "teardown",
    }, log)
  end)
end)

describe("pending", function()
  pending("a placeholder")
  it("stops a test from inside", function()
    pending("not yet")
    error("never runs")
  end)
end)

describe("nesting", function()
  local depth = {}
  before_each(function() depth[#depth + 1] = 1 end)
  describe("inner", function()
    before_each(function() depth[#depth + 1] = 2 end)
    it("sees outer hooks first", function()
      assert.same({ 1, 2 }, depth)
    end)
  end)
end)

insulate("insulate", function()
  insulated_value = 1
  it("keeps globals inside", function() assert.equal(1, insulated_value) end)
end)

describe("after insulate", function()
  it("does not see them", function() assert.is_nil(insulated_value) end)
end)

describe("the spec environment", function()
  it("has busted's globals", function()
    for _, name in ipairs({ "describe", "context", "it", "spec", "test", "pending", "setup", "teardown",
        "lazy_setup", "lazy_teardown", "strict_setup", "strict_teardown", "before_each", "after_each",
        "finally", "insulate", "expose", "assert", "spy", "stub", "mock", "match" }) do
      assert.is_not_nil(_G[name] or getfenv(1)[name], name)
    end
  end)
end)
