-- env = "production": a client never sees a 5xx error's details; 4xx messages stay.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

describe("env = production", function()
  it("hides a handler error's message behind 500 internal server error", function()
    local res = request("GET", "/boom")
    H.is_error(res, 500, "internal server error")
    assert.is_nil(res.body:find("hunter2", 1, true))
    H.still_works("/ok")
  end)

  it("hides it in the HTML error page too", function()
    local res = request("GET", "/boom", { headers = { accept = "text/html" } })
    assert.are.equal(500, res.status)
    assert.matches("<p>internal server error</p>", res.body, 1, true)
    assert.is_nil(res.body:find("hunter2", 1, true))
  end)

  it("keeps an app.error 4xx message", function()
    H.is_error(request("GET", "/missing"), 404, "no such item")
  end)

  it("hides an app.error 5xx message", function()
    local res = request("GET", "/unavailable")
    H.is_error(res, 503, "service unavailable, retry later")
    assert.are.equal("1", res.headers["retry-after"])
  end)

  it("hides why a response could not be sent", function()
    H.is_error(request("GET", "/badheader"), 500, "internal server error")
    H.still_works("/ok")
  end)
end)
