-- board_helper: shared setup for the team board's specs (not a spec itself: no _spec suffix).
--   local B = require("tests.spec.board_helper").with(request)
--   setup(B.schema)          -- applies migrations/ once per run (outside the fixture), or fails
--   db.fixture()             -- every test's rows are rolled back
--   before_each(B.fresh)     -- and starts from an empty board
--   local room = B.room("alice", "General")     -- as alice (a bearer token: B.as("alice"))
local cjson = require "cjson"
local app = require "sluice"

local M = {}
local migrated = false

-- Applies migrations/*.sql (idempotent) so `sluice test` works on a fresh database; fails the
-- group with a clear message when there is no database at all.
function M.schema()
  if migrated then return end
  if not app.db.configured() then
    error("no database configured: set DATABASE_URL to run the board's specs (tools/pg-dev start /tmp/pg prints one)", 0)
  end
  local rc = require("migrate")({ "--quiet" })
  if rc ~= 0 then error("sluice migrate failed (exit " .. tostring(rc) .. "): see the message above", 0) end
  migrated = true
end

-- before_each(B.fresh) after db.fixture(): every test starts from an empty board whatever the
-- database holds; the delete is part of the test's transaction and is rolled back with it.
function M.fresh()
  app.db.query("delete from rooms")
end

-- Headers naming a user: a bearer token signed by the board (no account needed for that).
function M.as(user) return { authorization = "Bearer " .. require("board_auth").token_for(user) } end

-- An account with a password, made directly in the database (the test's transaction).
function M.account(name, password)
  app.db.query("insert into users (name, password_hash) values ($1, $2)", name, app.password.hash(password))
end

function M.decode(s) return cjson.decode(s) end

function M.with(request)
  local B = setmetatable({}, { __index = M })

  local function must(res, status, what)
    if res.status ~= status then
      error(string.format("%s: expected %d, got %d: %s", what, status, res.status, tostring(res.body)), 3)
    end
    return res:json()
  end

  function B.room(user, title, description)
    return must(request("POST", "/api/rooms", { headers = M.as(user), json = { title = title, description = description } }),
      201, "create room")
  end

  function B.post(user, room_id, body)
    return must(request("POST", "/api/rooms/" .. room_id .. "/posts", { headers = M.as(user), json = { body = body } }),
      201, "create post")
  end

  function B.react(user, post_id, emoji)
    return must(request("POST", "/api/posts/" .. post_id .. "/reactions", { headers = M.as(user), json = { emoji = emoji } }),
      201, "react")
  end

  -- request as a user: B.call("alice", "PATCH", path, { json = ... })
  function B.call(user, method, path, opts)
    opts = opts or {}
    opts.headers = opts.headers or {}
    if user then opts.headers.authorization = M.as(user).authorization end
    return request(method, path, opts)
  end

  return B
end

return M
