-- failure details: expected and actual values must be printed.
describe("details", function()
  it("equal", function() assert.are.equal(1, 2) end)
  it("same", function() assert.are.same({ a = { b = 1 } }, { a = { b = 2 } }) end)
end)
