-- GET /api/v1/me at a steady, moderate pace: each connection pauses ME_PAUSE_MS (default 2) before
-- its next request, so two connections ask about 800 times a second, far below what the machine
-- can answer. The isolation runs use it: a closed loop as fast as the service answers would keep
-- most of the cores busy by itself, and its tail would measure the competition for them, not how
-- well /me is kept apart from the hashing.
wrk.method = "GET"
wrk.path = os.getenv("ME_PATH") or "/api/v1/me"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("ACCESS_TOKEN"), "ACCESS_TOKEN unset")
local pause = tonumber(os.getenv("ME_PAUSE_MS") or "2")
function delay()
  return pause
end
dofile(assert(os.getenv("BENCH_DIR"), "BENCH_DIR unset") .. "/report.lua")
