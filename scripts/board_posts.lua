-- board_posts: posts in a room (newest first) and emoji reactions on posts.
local app = require "sluice"
local H = require "board_http"
local auth = require "board_auth"
local live = require "board_live"
local ts = require("board_rooms").ts

local M = {}

-- A post with its reaction counts ({ "👍": 2 }) and the emojis the asking user ($2) used.
local POST = "select p.id, p.room_id, p.author, p.body, " .. ts("p.created_at", "created_at") .. ", "
  .. ts("p.edited_at", "edited_at") .. [[,
  coalesce((select json_object_agg(emoji, n) from
     (select emoji, count(*)::int as n from reactions r where r.post_id = p.id group by emoji) x), '{}'::json) as reactions,
  coalesce((select json_agg(emoji order by emoji collate "C") from reactions r
     where r.post_id = p.id and r.user_name = $2), '[]'::json) as mine
  from posts p ]]

local function shape(row)
  row.mine = H.array(row.mine or {})
  return row
end

local function load(id, user)
  local row = app.db.query(POST .. "where p.id = $1", id, user)[1]
  return row and shape(row)
end

local function emojis()
  local cfg = app.config.app or {}
  return cfg.emojis or { "👍", "❤️", "😂", "🎉", "😮", "😢" }
end

local POST_BODY = { fields = { body = H.text(1, 2000, true) } }
local REACTION = { fields = { emoji = { type = "string", required = true, enum = emojis() } } }

local function counts(post_id)
  local rows = app.db.query("select emoji, count(*)::int as n from reactions where post_id = $1 group by emoji", post_id)
  local t = {}
  for _, r in ipairs(rows) do t[r.emoji] = r.n end
  return t
end

-- GET /api/rooms/:id/posts?limit=&cursor= | ?page=  (newest first)
function M.list(req)
  local room = H.id(req.params.id, "room")
  local p = H.page(req)
  local user = auth.user(req)
  if not app.db.query("select 1 from rooms where id = $1", room)[1] then H.fail(404, "room not found") end
  local rows, total
  if p.page then
    rows = app.db.query(POST .. "where p.room_id = $1 order by p.id desc limit $3 offset $4",
      room, user, p.limit + 1, (p.page - 1) * p.limit)
    total = app.db.query("select count(*)::int as n from posts where room_id = $1", room)[1].n
  else
    rows = app.db.query(POST .. "where p.room_id = $1 and ($3::bigint is null or p.id < $3) order by p.id desc limit $4",
      room, user, p.cursor, p.limit + 1)
  end
  for _, r in ipairs(rows) do shape(r) end
  return H.json(200, H.listing(rows, p, total))
end

-- POST /api/rooms/:id/posts { body } -> 201 post; publishes post.created
function M.create(req)
  local user = auth.require(req)
  local room = H.id(req.params.id, "room")
  local text = H.input(req, POST_BODY).body
  local row = app.db.query("insert into posts (room_id, author, body) select id, $2, $3 from rooms where id = $1 returning id",
    room, user, text)[1]
  if not row then H.fail(404, "room not found") end
  local post = load(row.id, user)
  live.publish(room, "post.created", post)
  return H.json(201, post, { headers = { location = "/api/posts/" .. post.id } })
end

-- GET /api/posts/:id -> post
function M.get(req)
  local post = load(H.id(req.params.id, "post"), auth.user(req))
  if not post then H.fail(404, "post not found") end
  return H.json(200, post)
end

-- PATCH /api/posts/:id { body } -> post (author only); publishes post.updated
function M.update(req)
  local user = auth.require(req)
  local id = H.id(req.params.id, "post")
  local text = H.input(req, POST_BODY).body
  local cur = app.db.query("select author from posts where id = $1", id)[1]
  if not cur then H.fail(404, "post not found") end
  if cur.author ~= user then H.fail(403, "only the author may edit this post") end
  if not app.db.query("update posts set body = $2, edited_at = now() where id = $1 returning id", id, text)[1] then
    H.fail(404, "post not found")
  end
  local post = load(id, user)
  live.publish(post.room_id, "post.updated", post)
  return H.json(200, post)
end

-- DELETE /api/posts/:id -> 204 (the author or the room's creator); publishes post.deleted
function M.delete(req)
  local user = auth.require(req)
  local id = H.id(req.params.id, "post")
  local cur = app.db.query("select p.author, p.room_id, r.created_by from posts p join rooms r on r.id = p.room_id"
    .. " where p.id = $1", id)[1]
  if not cur then H.fail(404, "post not found") end
  if cur.author ~= user and cur.created_by ~= user then
    H.fail(403, "only the author or the room's creator may delete this post")
  end
  if not app.db.query("delete from posts where id = $1 returning id", id)[1] then H.fail(404, "post not found") end
  live.publish(cur.room_id, "post.deleted", { id = id, room_id = cur.room_id, by = user })
  return 204
end

-- GET /api/posts/:id/reactions -> { post_id, reactions = [ { emoji, count, users } ] }
function M.reactions(req)
  local id = H.id(req.params.id, "post")
  if not app.db.query("select 1 from posts where id = $1", id)[1] then H.fail(404, "post not found") end
  local rows = app.db.query([[select emoji, count(*)::int as count, json_agg(user_name order by created_at, user_name) as users
    from reactions where post_id = $1 group by emoji order by min(created_at), emoji]], id)
  return H.json(200, { post_id = id, reactions = H.array(rows) })
end

local function reaction_result(id, room_id, emoji, user, action)
  local c = counts(id)
  local data = { post_id = id, room_id = room_id, emoji = emoji, user = user, action = action,
                 count = c[emoji] or 0, reactions = c }
  live.publish(room_id, "reaction", data)
  return data
end

-- POST /api/posts/:id/reactions { emoji } -> 201; 409 when this user already reacted so
function M.react(req)
  local user = auth.require(req)
  local id = H.id(req.params.id, "post")
  local emoji = H.input(req, REACTION).emoji
  local post = app.db.query("select room_id from posts where id = $1", id)[1]
  if not post then H.fail(404, "post not found") end
  local ok, res = pcall(app.db.query, "insert into reactions (post_id, user_name, emoji) values ($1, $2, $3)"
    .. " on conflict do nothing returning post_id", id, user, emoji)
  if not ok then
    if type(res) == "table" and res.sqlstate == "23503" then H.fail(404, "post not found") end   -- deleted meanwhile
    error(res, 0)
  end
  if not res[1] then H.fail(409, "emoji: you already reacted with " .. emoji) end
  return H.json(201, reaction_result(id, post.room_id, emoji, user, "added"))
end

-- DELETE /api/posts/:id/reactions/:emoji -> 200 with the new counts
function M.unreact(req)
  local user = auth.require(req)
  local id = H.id(req.params.id, "post")
  local emoji = req.params.emoji
  local post = app.db.query("select room_id from posts where id = $1", id)[1]
  if not post then H.fail(404, "post not found") end
  local gone = app.db.query("delete from reactions where post_id = $1 and user_name = $2 and emoji = $3 returning post_id",
    id, user, emoji)
  if not gone[1] then H.fail(404, "reaction not found: you have not reacted with " .. emoji) end
  return H.json(200, reaction_result(id, post.room_id, emoji, user, "removed"))
end

return M
