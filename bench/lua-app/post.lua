-- post.lua: wrk script POSTing the file named by the first script argument.
-- Usage: wrk -s bench/lua-app/post.lua URL -- FILE CONTENT-TYPE
function init(args)
  local f = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = args[2] or "application/octet-stream"
end
