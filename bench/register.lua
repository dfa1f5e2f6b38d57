-- POST /api/v1/auth/register, a new email for every request: RUN_ID, the thread number and a
-- per-thread counter. REGISTER_PATH for the peer's.
local counter = 1
function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end

local n = 0
local password = assert(os.getenv("LOGIN_PASSWORD"), "LOGIN_PASSWORD unset")
local run_id = os.getenv("RUN_ID") or tostring(os.time())
local path = os.getenv("REGISTER_PATH") or "/api/v1/auth/register"
function request()
  n = n + 1
  local body = string.format('{"email": "reg-%s-%d-%d@bench.example", "password": "%s"}',
    run_id, thread_id, n, password)
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end
dofile(assert(os.getenv("BENCH_DIR"), "BENCH_DIR unset") .. "/report.lua")
