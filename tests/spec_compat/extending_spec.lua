-- Extending luassert the documented way: custom assertions with say messages, formatters and
-- parameters.
local say = require "say"

describe("extending luassert", function()
  it("registers a custom assertion with its messages", function()
    local function has_property(state, arguments)
      local property, tbl = arguments[1], arguments[2]
      return type(tbl) == "table" and tbl[property] ~= nil
    end
    say:set("assertion.has_property.positive", "Expected property %s in:\n%s")
    say:set("assertion.has_property.negative", "Expected property %s not to be in:\n%s")
    assert:register("assertion", "has_property", has_property,
      "assertion.has_property.positive", "assertion.has_property.negative")
    assert.has_property("name", { name = "x" })
    assert.is_not.has_property("age", { name = "x" })
    assert.error_matches(function() assert.has_property("age", { name = "x" }) end, "Expected property")
    assert:unregister("assertion", "has_property")
  end)

  it("adds and removes a formatter", function()
    local function fmt_point(v)
      if type(v) == "table" and v.is_point then return ("Point(%d, %d)"):format(v.x, v.y) end
    end
    assert:add_formatter(fmt_point)
    assert.error_matches(function()
      assert.same({ is_point = true, x = 1, y = 2 }, { is_point = true, x = 1, y = 3 })
    end, "Point%(1, 3%)")
    assert:remove_formatter(fmt_point)
    local ok, err = pcall(assert.same, { is_point = true, x = 1, y = 2 }, { is_point = true, x = 1, y = 3 })
    assert.is_false(ok)
    assert.is_nil(tostring(err):find("Point(", 1, true))
  end)

  it("set_parameter changes the table format depth", function()
    local deep = { a = { b = { c = { d = 1 } } } }
    local deep2 = { a = { b = { c = { d = 2 } } } }
    assert:set_parameter("TableFormatLevel", 1)
    local _, err = pcall(assert.same, deep, deep2)
    assert.matches("{ ... more }", tostring(err), 1, true)
    assert:set_parameter("TableFormatLevel", 3)
    assert.equal(3, assert:get_parameter("TableFormatLevel"))
  end)

  it("formats values the way failure messages show them", function()
    local out = assert:format({ "text", 12, n = 2 })
    assert.equal("(string) 'text'", out[1])
    assert.equal("(number) 12", out[2])
  end)
end)
