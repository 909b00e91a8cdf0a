-- web feature suite: static files, cookies, CORS, request IDs, middleware, forms, errors, gzip.
return {
  scripts = { "app.lua" },
  ratelimit = false,
  cors = {
    origins = { "https://app.example" },
    methods = { "GET", "POST" },
    headers = { "content-type", "x-token" },
    expose = { "x-request-id", "x-after" },
    max_age = 120,
  },
}
