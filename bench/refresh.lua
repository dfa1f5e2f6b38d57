-- POST /api/v1/auth/refresh. Run with one connection per thread (-c equal to -t): each thread
-- starts with its own refresh token from REFRESH_TOKENS (space-separated, one per thread) and
-- sends the token each response returned, so every request rotates.
local tokens = {}
for token in string.gmatch(assert(os.getenv("REFRESH_TOKENS"), "REFRESH_TOKENS unset"), "%S+") do
  tokens[#tokens + 1] = token
end
local counter = 1
function setup(thread)
  -- (assert's second result would reach thread:set as a third argument and break it)
  local first = assert(tokens[counter], "fewer REFRESH_TOKENS than threads")
  thread:set("token", first)
  counter = counter + 1
end

function request()
  return wrk.format("POST", "/api/v1/auth/refresh", { ["Content-Type"] = "application/json" },
    string.format('{"refresh_token": "%s"}', token))
end

function response(status, _headers, body)
  if status == 200 then
    token = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"') or token
  end
end
dofile(assert(os.getenv("BENCH_DIR"), "BENCH_DIR unset") .. "/report.lua")
