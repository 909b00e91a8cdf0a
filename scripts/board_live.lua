-- board_live: the per-room event stream. GET /api/rooms/:id/events is an SSE stream on
-- channel "room:<id>"; handlers call M.publish after their database write has committed.
local app = require "sluice"
local auth = require "board_auth"
local H = require "board_http"

local M = {}

function M.channel(room_id) return "room:" .. tostring(room_id) end

-- M.publish(room_id, event, data): data is sent as JSON. A publish failure (SSE not running,
-- event too large) is logged rather than failing a request whose write already committed.
function M.publish(room_id, event, data)
  local ok, id_or_err, err = pcall(app.publish, M.channel(room_id), { event = event, data = data })
  if not ok or not id_or_err then
    app.log("warn", "publish failed", { event = event, room_id = room_id, error = tostring(ok and err or id_or_err) })
    return nil
  end
  return id_or_err
end

-- The authorizer: a known user (the session cookie EventSource sends, or a bearer token from
-- other clients: board_auth.user) and an existing room, else the stream is refused with JSON.
local function authorize(req)
  local user = auth.user(req)
  if not user then H.fail(401, "login required: log in first (EventSource sends the cookie) or send a bearer token") end
  local id = H.id(req.params.id, "room")
  if not app.db.query("select 1 from rooms where id = $1", id)[1] then H.fail(404, "room not found") end
  M.publish(id, "presence.join", { room_id = id, user = user })
  return {
    channel = M.channel(id),
    user = user,               -- sse.per_user caps this user's tabs
    on_close = function()
      M.publish(id, "presence.leave", { room_id = id, user = user })
    end,
  }
end

function M.events(req)
  local ok, res = pcall(authorize, req)
  if ok then return res end
  if type(res) == "table" and res.status and res.message then
    return { status = res.status, json = { error = res.message } }
  end
  error(res, 0)
end

return M
