-- GET /api/v1/me (or ME_PATH: the peer's /users/me) with the bearer in ACCESS_TOKEN.
wrk.method = "GET"
wrk.path = os.getenv("ME_PATH") or "/api/v1/me"
wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("ACCESS_TOKEN"), "ACCESS_TOKEN unset")
dofile(assert(os.getenv("BENCH_DIR"), "BENCH_DIR unset") .. "/report.lua")
