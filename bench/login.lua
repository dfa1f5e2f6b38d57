-- POST /api/v1/auth/login with the correct password, cycling through the accounts in
-- LOGIN_EMAILS (space-separated). Many accounts, because the per-email back-off charges every
-- attempt before its check: more than AUTH_LOGIN_FREE_FAILURES concurrent logins to one account
-- are answered 429 by design. With LOGIN_FORM set, the peer's form login at LOGIN_PATH instead.
local emails = {}
for email in string.gmatch(assert(os.getenv("LOGIN_EMAILS"), "LOGIN_EMAILS unset"), "%S+") do
  emails[#emails + 1] = email
end
local password = assert(os.getenv("LOGIN_PASSWORD"), "LOGIN_PASSWORD unset")

local path = os.getenv("LOGIN_PATH") or "/api/v1/auth/login"
local form = os.getenv("LOGIN_FORM") ~= nil
local function form_value(text)
  return (string.gsub(text, "[^%w%-%._~]", function(c)
    return c == " " and "+" or string.format("%%%02X", string.byte(c))
  end))
end

local counter = 1
function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end

local n = 0
function request()
  n = n + 1
  local email = emails[((thread_id or 1) * 7 + n) % #emails + 1]
  if form then
    return wrk.format("POST", path, { ["Content-Type"] = "application/x-www-form-urlencoded" },
      "username=" .. form_value(email) .. "&password=" .. form_value(password))
  end
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" },
    string.format('{"email": "%s", "password": "%s"}', email, password))
end
dofile(assert(os.getenv("BENCH_DIR"), "BENCH_DIR unset") .. "/report.lua")
