-- app.lua: the live team board (rooms, posts, reactions, presence) — route table and wiring.
-- The handlers live in scripts/board_*.lua; docs/example-app.md describes the API.
local app = require "sluice"
local H = require "board_http"
local auth = require "board_auth"
local rooms = require "board_rooms"
local posts = require "board_posts"
local live = require "board_live"

local h = H.handler

-- accounts and who am I
app.post("/api/signup", h(auth.signup))
app.post("/api/login", h(auth.login))
app.post("/api/logout", h(auth.logout))
app.get("/api/me", h(auth.me))

-- rooms
app.get("/api/rooms", h(rooms.list))
app.post("/api/rooms", h(rooms.create))
app.get("/api/rooms/:id", h(rooms.get))
app.patch("/api/rooms/:id", h(rooms.update))
app.delete("/api/rooms/:id", h(rooms.delete))

-- posts
app.get("/api/rooms/:id/posts", h(posts.list))
app.post("/api/rooms/:id/posts", h(posts.create))
app.get("/api/posts/:id", h(posts.get))
app.patch("/api/posts/:id", h(posts.update))
app.delete("/api/posts/:id", h(posts.delete))

-- reactions
app.get("/api/posts/:id/reactions", h(posts.reactions))
app.post("/api/posts/:id/reactions", h(posts.react))
app.delete("/api/posts/:id/reactions/:emoji", h(posts.unreact))

-- live updates: post.created, post.updated, post.deleted, reaction, presence.join/leave,
-- room.updated, room.deleted on channel "room:<id>"
app.sse("/api/rooms/:id/events", live.events)

-- Unknown API paths answer JSON, not the static 404 page.
app.get("/api/*", function() return H.json(404, { error = "no such API route" }) end)

-- The HTML client. Static mounts register "/*" as a wildcard, so the exact and
-- parameterised /api routes above still win.
app.static("/", "public", { cache_control = "no-cache" })
