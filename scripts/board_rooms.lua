-- board_rooms: rooms of the team board (list, create, get, rename, delete).
local app = require "sluice"
local H = require "board_http"
local auth = require "board_auth"
local live = require "board_live"

local M = {}

-- Timestamps go out as ISO 8601 UTC strings with milliseconds.
local function ts(col, as)
  return string.format([[to_char(%s at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as %s]], col, as or col)
end
M.ts = ts

local COLS = "id, title, description, created_by, " .. ts("created_at") .. ", " .. ts("updated_at")

local DUP = "title: a room with this title already exists"

-- Runs fn(); a unique violation on the room title becomes 409.
local function unique_title(fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then return res end
  if type(res) == "table" and res.sqlstate == "23505" then H.fail(409, DUP) end
  error(res, 0)
end

-- What a room write may send (app.validate schemas, see board_http.input).
local NEW_ROOM = { fields = { title = H.line(1, 100, true), description = H.text(nil, 500) } }
local CHANGE_ROOM = {
  fields = { title = H.line(1, 100), description = H.text(nil, 500) },
  check = function(v)
    if v.title == nil and v.description == nil then return "nothing to change (give title and/or description)" end
  end,
}

local function fields(req, creating)
  local b = H.input(req, creating and NEW_ROOM or CHANGE_ROOM)
  return b.title, b.description
end

-- The room if it exists and `user` created it: 404 / 403 otherwise.
local function owned(id, user, verb)
  local r = app.db.query("select created_by from rooms where id = $1", id)[1]
  if not r then H.fail(404, "room not found") end
  if r.created_by ~= user then H.fail(403, "only " .. r.created_by .. ", who created this room, may " .. verb .. " it") end
end

-- GET /api/rooms?limit=&cursor= | ?page=  (oldest first)
function M.list(req)
  local p = H.page(req)
  local rows, total
  if p.page then
    rows = app.db.query("select " .. COLS .. " from rooms order by id limit $1 offset $2", p.limit + 1, (p.page - 1) * p.limit)
    total = app.db.query("select count(*)::int as n from rooms")[1].n
  else
    rows = app.db.query("select " .. COLS .. " from rooms where id > $1 order by id limit $2", p.cursor or 0, p.limit + 1)
  end
  return H.json(200, H.listing(rows, p, total))
end

-- POST /api/rooms { title, description? } -> 201 room
function M.create(req)
  local user = auth.require(req)
  local title, description = fields(req, true)
  local room = unique_title(function()
    return app.db.query("insert into rooms (title, description, created_by) values ($1, $2, $3) returning " .. COLS,
      title, description or "", user)[1]
  end)
  return H.json(201, room, { headers = { location = "/api/rooms/" .. room.id } })
end

-- GET /api/rooms/:id -> room with its post count
function M.get(req)
  local id = H.id(req.params.id, "room")
  local room = app.db.query("select " .. COLS .. ", (select count(*)::int from posts p where p.room_id = rooms.id) as post_count"
    .. " from rooms where id = $1", id)[1]
  if not room then H.fail(404, "room not found") end
  return H.json(200, room)
end

-- PATCH /api/rooms/:id { title?, description? } -> room (creator only)
function M.update(req)
  local user = auth.require(req)
  local id = H.id(req.params.id, "room")
  local title, description = fields(req, false)
  owned(id, user, "change")
  local room = unique_title(function()
    return app.db.query("update rooms set title = coalesce($2, title), description = coalesce($3, description),"
      .. " updated_at = now() where id = $1 returning " .. COLS, id, title, description)[1]
  end)
  if not room then H.fail(404, "room not found") end
  live.publish(id, "room.updated", room)
  return H.json(200, room)
end

-- DELETE /api/rooms/:id -> 204 (creator only; its posts and reactions go with it)
function M.delete(req)
  local user = auth.require(req)
  local id = H.id(req.params.id, "room")
  owned(id, user, "delete")
  local gone = app.db.query("delete from rooms where id = $1 returning id", id)
  if not gone[1] then H.fail(404, "room not found") end
  live.publish(id, "room.deleted", { id = id })
  return 204
end

return M
