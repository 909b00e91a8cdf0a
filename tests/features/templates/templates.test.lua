-- HTML templates through the real stack: escaping, raw output, code, partials, errors with the
-- template's line, compiled once per state. Runs with tests/features/templates/config.lua.
local H = setfenv(assert(loadfile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "../helpers.lua")), getfenv(1))()

describe("templates", function()
  it("renders a page: <%= %> escapes, <%- %> does not, <% %> runs Lua, -%> eats the newline", function()
    local res = request("GET", "/page?title=" .. "%3Cscript%3E%26%22'")
    assert.are.equal(200, res.status)
    assert.are.equal("text/html; charset=utf-8", res.headers["content-type"])
    assert.are.equal(table.concat({
      "<title>&lt;script&gt;&amp;&quot;&#39;</title>",
      "<ul>",
      '  <li class="odd">one</li>',
      '  <li class="even">&lt;two&gt;</li>',
      "</ul>",
      "<footer><em>trusted</em> &amp; <% literal</footer>",
      "", "" }, "\n"), res.body)
  end)

  it("takes a status", function()
    local res = request("GET", "/status")
    assert.are.equal(410, res.status)
    assert.matches("<title>gone</title>", res.body, 1, true)
  end)

  it("names the template file and line of an error, and the one looked for when there is none", function()
    local ok, err = pcall(app.render_string, "broken", {})
    assert.is_false(ok)
    assert.matches("^templates/broken.html:3: attempt to index global 'user'", err)
    ok, err = pcall(app.render_string, "nope", {})
    assert.is_false(ok)
    assert.matches('no template "nope" %(looked for /.*/templates/nope%.html', err)
    assert.matches("templates.test.lua:%d+: ", err)   -- raised at the caller's line
    ok, err = pcall(app.render_string, "../config", {})
    assert.is_false(ok)
    assert.matches('may not contain "." or ".." segments', err, 1, true)
    assert.are.equal(500, request("GET", "/broken").status)
    assert.are.equal(500, request("GET", "/missing").status)
    H.still_works()
  end)

  it("lets a template call what yields", function()
    local res = request("GET", "/db")
    assert.are.equal(200, res.status)
    assert.are.equal("<p>waited</p>\n", res.body)
  end)

  it("compiles each file once per state", function()
    local T = require "template"
    local opens, real = 0, io.open
    io.open = function(p, ...) if tostring(p):match("/templates/") then opens = opens + 1 end return real(p, ...) end
    local ok, err = pcall(function()
      T.clear()
      for _ = 1, 5 do app.render_string("parts/footer", { html = "x" }) end
    end)
    io.open = real
    assert(ok, err)
    assert.are.equal(1, opens)
  end)

  it("escape() is there for code blocks too", function()
    assert.are.equal("&lt;a href=&quot;x&quot;&gt;", require("template").escape('<a href="x">'))
    assert.are.equal("", require("template").escape(nil))
  end)
end)
