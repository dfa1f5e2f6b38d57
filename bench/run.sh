#!/usr/bin/env bash
# `make bench`: the numbers of issues 8 and 14, written to bench/RESULTS.md, bench/results.json and
# bench/results.png.
#
#  1. builds the release api-container and the hash_bench example;
#  2. runs hash_bench (our PBKDF2 per backend, alone and two interleaved, and the pbkdf2 crate) and
#     measures the single-chain bound with OpenSSL (`openssl speed -evp sha256`, 16 KiB blocks: one
#     dependent chain of compressions), one after the other in BENCH_HASH_ROUNDS (5) rounds;
#  3. starts a private PostgreSQL (scripts/pg.sh) in a temporary folder and the release service on a
#     free loopback port (default PBKDF2 iterations, per-IP limits off);
#  4. wrk against 127.0.0.1 only, every run bounded (BENCH_DURATION, at most 10 s): /me, refresh,
#     login, register;
#  5. (run last, after 6) /me p99 at a steady pace (bench/me-paced.lua), at idle and during a
#     login flood: with the default hashing pool (one thread per core), then with one core kept
#     free of hashing (AUTH_MAX_CONCURRENT_HASHES = cores - 1), then (root or sudo -n, when the
#     kernel's autogroup is on) the default pool with kernel.sched_autogroup_enabled=0 for those
#     runs only;
#  5b. the peer: fastapi-users 15 (bench/peer/app.py, pinned in bench/peer/requirements.txt, in a
#     virtualenv of its own under ~/.cache/latchkey), 2 uvicorn workers, asyncpg pool 16, on a
#     PostgreSQL cluster of its own, driven by the same wrk scripts: /me, login, register;
#  6. /me and login p50 with 1 000 and 1 000 000 users, and the sessions table after 1 000 000
#     expired sessions and a few thousand requests;
#  7. RSS idle and under load, time to /readyz, the image size;
#  8. bench/report.py writes the results.
#
# Needs Rust, Python 3 (with venv and pip, and PyPI for the peer's packages), openssl, PostgreSQL server binaries (scripts/pg.sh installs them with apt),
# wrk (installed with apt-get as root or through sudo -n) and matplotlib (pip, --user unless root).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bench="$root/bench"
target="${CARGO_TARGET_DIR:-$root/target}"
duration=${BENCH_DURATION:-10}   # seconds per load run (capped at 10)
[ "$duration" -le 10 ] || duration=10
nproc=$(nproc)

log() { echo "==> $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_at_start=$(cut -d' ' -f1 /proc/loadavg)
uptime_at_start=$(uptime)
autogroup_setting=/proc/sys/kernel/sched_autogroup_enabled
autogroup_at_start=$(cat "$autogroup_setting" 2>/dev/null || echo absent)

# --- tools -------------------------------------------------------------------------------------
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
if ! command -v wrk >/dev/null 2>&1; then
  log "wrk not found; installing Debian's wrk package"
  if ! command -v apt-get >/dev/null 2>&1 \
    || ! { "${as_root[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq wrk >/dev/null; }; then
    die "wrk is missing: install it ('sudo apt-get install wrk', or build https://github.com/wg/wrk) and run make bench again"
  fi
fi
for tool in curl psql python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: install it (Debian: curl, postgresql-client, python3)"
done
if ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
  log "installing matplotlib with pip"
  pip_user=()
  [ "$(id -u)" -eq 0 ] || pip_user=(--user)
  python3 -m pip install -q "${pip_user[@]}" matplotlib >&2 \
    || python3 -m pip install -q "${pip_user[@]}" --break-system-packages matplotlib >&2 \
    || log "could not install matplotlib ('python3 -m pip install --user matplotlib'): no chart this time"
fi

# --- 1. build ------------------------------------------------------------------------------------
log "building the release api-container and hash_bench (target dir $target)"
build_started=$(date +%s)
cargo build --release --locked -p api-container
cargo build --release --locked -p auth-core --example hash_bench
build_seconds=$(( $(date +%s) - build_started ))
run_started=$(date +%s)

# --- work folder, cleanup ------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench.XXXXXX")
chmod 755 "$work"   # scripts/pg.sh runs the cluster as postgres when we are root
pg_dir="$work/pg"
peer_pg_dir="$work/peer-pg"
service_pid=""
peer_pid=""
background_pids=()
autogroup_restore=""   # the value to put back when the isolation runs changed it
set_autogroup() { echo "$1" | "${as_root[@]}" tee "$autogroup_setting" >/dev/null 2>&1; }
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$autogroup_restore" ]; then set_autogroup "$autogroup_restore" || true; fi
  for pid in "${background_pids[@]}" "$service_pid" "$peer_pid"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  for pid in "${background_pids[@]}" "$service_pid" "$peer_pid"; do
    if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  done
  for dir in "$pg_dir" "$peer_pg_dir"; do
    if [ -d "$dir/data" ]; then (cd "$work" && "$root/scripts/pg.sh" stop "$dir") || true; fi
  done
  if [ "$status" -ne 0 ] && [ -f "$work/service.log" ]; then
    echo "bench: failed; the service's last log lines:" >&2
    tail -n 20 "$work/service.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# --- 2. hashing ------------------------------------------------------------------------------------
# In alternating rounds, so that each round's ratio compares figures taken seconds apart: this
# VM's speed drifts by 10-30% over minutes (steal, other tenants), which one bound measured once
# against our figures measured a minute later turned into a ratio that moved by as much.
hash_rounds=${BENCH_HASH_ROUNDS:-5}
for round in $(seq 1 "$hash_rounds"); do
  log "hashing, round $round of $hash_rounds: hash_bench, then the single-chain bound (openssl speed -evp sha256, 16 KiB blocks)"
  "$target/release/examples/hash_bench" | tee "$work/hash-$round.json" >&2
  openssl speed -mr -seconds 2 -bytes 16384 -evp sha256 2>/dev/null \
    | awk -F: '/^\+F:/ { printf "{\"openssl_sha256_bytes_per_second\": %s}\n", $4 }' >"$work/bound-$round.json"
  [ -s "$work/bound-$round.json" ] || die "openssl speed gave no figure"
  cat "$work/bound-$round.json" >&2
done

# --- 3. PostgreSQL and the service -----------------------------------------------------------------
pg_port=$(free_port)
log "PostgreSQL on 127.0.0.1:$pg_port in $pg_dir"
# From $work: as root, pg.sh runs pg_ctl as postgres, which may not be allowed into the checkout.
(cd "$work" && "$root/scripts/pg.sh" start "$pg_dir" "$pg_port")
psql_admin=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres)
"${psql_admin[@]}" -d postgres -c "CREATE DATABASE latchkey" >/dev/null
sql() { "${psql_admin[@]}" -d latchkey -tA -c "$1"; }

port=$(free_port)
base="http://127.0.0.1:$port"
ready_ms=""
service_settings=()   # NAME=value settings added to the service's environment
start_service() {   # sets service_pid, and ready_ms: milliseconds from process start to /readyz 200
  local started now
  started=$(date +%s%N)
  env DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/latchkey?sslmode=verify-full" \
    DB_CA_FILE="$pg_dir/ca.crt" LISTEN_ADDR="127.0.0.1:$port" AUTH_ISSUER="$base" \
    AUTH_IP_LOGINS_PER_MINUTE=0 AUTH_IP_REGISTRATIONS_PER_HOUR=0 AUTH_COOKIE_SECURE=false \
    LOG_FORMAT=json RUST_LOG=warn ${service_settings[@]+"${service_settings[@]}"} \
    "$target/release/api-container" >>"$work/service.log" 2>&1 &
  service_pid=$!
  until curl -fsS -o /dev/null "$base/readyz" 2>/dev/null; do
    kill -0 "$service_pid" 2>/dev/null || die "api-container exited before it was ready"
    now=$(date +%s%N)
    [ $(( (now - started) / 1000000000 )) -lt 60 ] || die "api-container not ready after 60 s"
    sleep 0.01
  done
  now=$(date +%s%N)
  ready_ms=$(( (now - started) / 1000000 ))
}
stop_service() {
  kill -TERM "$service_pid"
  wait "$service_pid" || true
  service_pid=""
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$service_pid/status"; }

log "api-container on $base"
start_service   # empty database: migrations and the first signing key
ready_cold_ms=$ready_ms
stop_service
start_service   # migrated database, key present
ready_warm_ms=$ready_ms
log "ready after ${ready_cold_ms} ms (empty database), ${ready_warm_ms} ms (restart)"
sleep 1
rss_idle_kb=$(rss_kb)

password="correct horse battery staple"
email="bench@bench.example"
post() { curl -fsS -X POST "$base$1" -H 'content-type: application/json' -d "$2"; }
post /api/v1/auth/register "{\"email\": \"$email\", \"password\": \"$password\"}" >"$work/registered.json"
login() { post /api/v1/auth/login "{\"email\": \"$email\", \"password\": \"$password\"}"; }
# The accounts the login runs cycle through (see bench/login.lua).
login_emails=""
for i in $(seq 1 $(( 8 * nproc ))); do
  post /api/v1/auth/register "{\"email\": \"login-$i@bench.example\", \"password\": \"$password\"}" >/dev/null
  login_emails="$login_emails login-$i@bench.example"
done
access_token() { login | json_field access_token; }
phc=$(sql "SELECT password_hash FROM users WHERE email = '$email'")
case "$phc" in "\$pbkdf2-sha256\$i=600000,"*) ;; *) die "unexpected password hash: $phc" ;; esac

# --- load runs ---------------------------------------------------------------------------------------
run_id="$$-$(date +%s)"
export BENCH_DIR="$bench" LOGIN_EMAILS="$login_emails" LOGIN_PASSWORD="$password" RUN_ID="$run_id"
# The service's own count of answers per route and status (its /metrics), before and after each run.
statuses() { curl -fsS "$base/metrics" | grep '^latchkey_http_requests_total' || true; }
run_wrk() {   # NAME SCRIPT THREADS CONNECTIONS SECONDS [BASE URL, default the service's]
  local name=$1 script=$2 threads=$3 connections=$4 seconds=$5 url=${6:-$base}
  log "wrk $name: $threads threads, $connections connections, ${seconds}s"
  statuses >"$work/status-$name.before"
  BENCH_OUT="$work/wrk-$name.json" wrk -t "$threads" -c "$connections" -d "${seconds}s" --timeout 10s \
    -s "$bench/$script" "$url" >"$work/wrk-$name.txt"
  [ -s "$work/wrk-$name.json" ] || die "wrk $name wrote no result"
  statuses >"$work/status-$name.after"
  cat "$work/wrk-$name.json" >&2
}
# Largest VmRSS seen while a command runs.
sample_rss() {
  local max=0 rss
  while kill -0 "$service_pid" 2>/dev/null; do
    rss=$(rss_kb || echo 0)
    [ "${rss:-0}" -le "$max" ] || max=$rss
    echo "$max" >"$work/rss-max"
    sleep 0.2
  done
}
sample_rss &
background_pids+=($!)

# 4. throughput and latency per endpoint.
ACCESS_TOKEN=$(access_token) run_wrk me me.lua 2 32 "$duration"
tokens=""
for _ in $(seq 1 "$nproc"); do tokens="$tokens $(login | json_field refresh_token)"; done
REFRESH_TOKENS=$tokens run_wrk refresh refresh.lua "$nproc" "$nproc" "$duration"
run_wrk login login.lua "$nproc" $(( 2 * nproc )) "$duration"
run_wrk register register.lua "$nproc" $(( 2 * nproc )) "$duration"
# The runs below set it afresh, and wrk's scripts read it.
export ACCESS_TOKEN

rss_load_kb=$(cat "$work/rss-max")

# 5b. The peer, with the service idle beside it.
peer_requirements="$bench/peer/requirements.txt"
peer_venv="${XDG_CACHE_HOME:-$HOME/.cache}/latchkey/bench-peer-$(sha256sum "$peer_requirements" | cut -c1-12)"
if [ ! -x "$peer_venv/bin/uvicorn" ]; then
  log "installing the peer's packages into $peer_venv"
  rm -rf "$peer_venv"
  python3 -m venv "$peer_venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$peer_venv/bin/pip" install -q -r "$peer_requirements" >&2 || die "installing the peer's packages failed"
fi
peer_pg_port=$(free_port)
log "the peer's PostgreSQL on 127.0.0.1:$peer_pg_port"
(cd "$work" && "$root/scripts/pg.sh" start "$peer_pg_dir" "$peer_pg_port")
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$peer_pg_port" -U postgres -d postgres -c "CREATE DATABASE peer" >/dev/null
peer_port=$(free_port)
peer_base="http://127.0.0.1:$peer_port"
log "the peer (fastapi-users, 2 uvicorn workers) on $peer_base"
(cd "$bench/peer" && exec env PEER_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$peer_pg_port/peer" \
  PEER_POOL_SIZE=16 "$peer_venv/bin/uvicorn" app:app --host 127.0.0.1 --port "$peer_port" --workers 2 \
  --log-level warning --no-access-log) >>"$work/peer.log" 2>&1 &
peer_pid=$!
peer_started=$(date +%s)
until curl -fsS -o /dev/null "$peer_base/healthz" 2>/dev/null; do
  kill -0 "$peer_pid" 2>/dev/null || { tail -n 20 "$work/peer.log" >&2; die "the peer exited before it was ready"; }
  [ $(( $(date +%s) - peer_started )) -lt 60 ] || die "the peer is not ready after 60 s"
  sleep 0.2
done
peer_post() { curl -fsS -X POST "$peer_base$1" -H 'content-type: application/json' -d "$2"; }
for account in $email $login_emails; do
  peer_post /auth/register "{\"email\": \"$account\", \"password\": \"$password\"}" >/dev/null
done
peer_token=$(curl -fsS -X POST "$peer_base/auth/jwt/login" --data-urlencode "username=$email" \
  --data-urlencode "password=$password" | json_field access_token)
peer_version=$("$peer_venv/bin/python" -c 'import fastapi_users; print(fastapi_users.__version__)')
ACCESS_TOKEN=$peer_token ME_PATH=/users/me run_wrk peer-me me.lua 2 32 "$duration" "$peer_base"
LOGIN_FORM=1 LOGIN_PATH=/auth/jwt/login run_wrk peer-login login.lua "$nproc" $(( 2 * nproc )) "$duration" "$peer_base"
REGISTER_PATH=/auth/register run_wrk peer-register register.lua "$nproc" $(( 2 * nproc )) "$duration" "$peer_base"
kill -TERM "$peer_pid"
wait "$peer_pid" || true
peer_pid=""
(cd "$work" && "$root/scripts/pg.sh" stop "$peer_pg_dir")
sleep 1
rss_after_load_kb=$(rss_kb)

# 6. growth: 1 000 users, then 1 000 000, seeded in SQL with the registered user's hash.
seed_users() {   # total number of users wanted
  local have seeded
  have=$(sql "SELECT count(*) FROM users")
  seeded=$(sql "SELECT count(*) FROM users WHERE email LIKE 'seed-%'")
  sql "INSERT INTO users (id, email, password_hash, created_at)
       SELECT gen_random_uuid(), 'seed-' || g || '@bench.example',
              (SELECT password_hash FROM users WHERE email = '$email'), now()
       FROM generate_series($seeded + 1, $seeded + $1 - $have) AS g; ANALYZE users;" >/dev/null
}
growth_run() {   # label
  ACCESS_TOKEN=$(access_token)
  run_wrk "me-$1" me.lua 1 2 "$duration"
  run_wrk "login-$1" login.lua 1 "$nproc" "$duration"
}
log "seeding users to 1 000"
seed_users 1000
users_small=$(sql "SELECT count(*) FROM users")
growth_run 1k
log "seeding users to 1 000 000"
seed_started=$(date +%s)
seed_users 1000000
users_large=$(sql "SELECT count(*) FROM users")
seed_users_seconds=$(( $(date +%s) - seed_started ))
growth_run 1m

log "seeding 1 000 000 expired sessions"
seed_started=$(date +%s)
sql "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at)
     SELECT gen_random_uuid(), u.id, now() - interval '60 days', now() - interval '40 days',
            now() - interval '30 days'
     FROM generate_series(0, 999999) AS g
     JOIN (SELECT id, row_number() OVER () - 1 AS n FROM users WHERE email LIKE 'seed-%') AS u
       ON u.n = g % (SELECT count(*) FROM users WHERE email LIKE 'seed-%');
     ANALYZE sessions;" >/dev/null
seed_sessions_seconds=$(( $(date +%s) - seed_started ))
sessions_query="SELECT json_build_object('rows', count(*), 'expired', count(*) FILTER (WHERE expires_at < now()),
  'bytes', pg_total_relation_size('sessions')) FROM sessions"
sql "$sessions_query" >"$work/sessions-before.json"
# A few thousand requests of every kind that touches sessions.
ACCESS_TOKEN=$(access_token)
run_wrk sessions-me me.lua 1 2 5
tokens=""
for _ in $(seq 1 "$nproc"); do tokens="$tokens $(login | json_field refresh_token)"; done
REFRESH_TOKENS=$tokens run_wrk sessions-refresh refresh.lua "$nproc" "$nproc" 5
run_wrk sessions-login login.lua 1 "$nproc" 5
sql "$sessions_query" >"$work/sessions-after.json"
sql "VACUUM sessions" >/dev/null
sql "$sessions_query" >"$work/sessions-after-vacuum.json"
cat "$work/sessions-before.json" "$work/sessions-after.json" >&2

# 5. isolation (last, so that restarting the service changes no other figure): /me at a steady
# pace, idle, then while a login flood (more connections than cores) fills the pool; then the same
# with one core kept free of hashing; then, where the kernel groups processes by session
# (autogroup) and we may change that, the default pool again with the grouping off. With it on,
# every PostgreSQL backend (each calls setsid) is a scheduling group of its own and weighs as much
# as the whole service, so the hashing threads' nice 10 counts only against the service's own
# threads, not against the database queries /me waits for on the same cores.
# A p99 of a few thousand requests moves by half from one run to the next on a small VM, so each
# setting runs BENCH_ISOLATION_ROUNDS (default 3) rounds of idle-then-flood and the report takes
# the median round. The seeded expired sessions go first: a restarted service's first pruning pass
# would otherwise delete them during these runs.
sql "DELETE FROM sessions WHERE expires_at < now()" >/dev/null
sql "VACUUM ANALYZE sessions" >/dev/null
ACCESS_TOKEN=$(access_token)
flood_seconds=$duration
me_seconds=$(( duration > 3 ? duration - 2 : 1 ))
isolation_rounds=${BENCH_ISOLATION_ROUNDS:-3}
isolation() {   # SUFFIX: rounds of /me idle, then /me during a login flood
  local round name
  for round in $(seq 1 "$isolation_rounds"); do
    name="$1-$round"
    run_wrk "me-idle$name" me-paced.lua 1 2 "$me_seconds"
    statuses >"$work/status-login-flood$name.before"
    BENCH_OUT="$work/wrk-login-flood$name.json" wrk -t 1 -c $(( 4 * nproc )) -d "${flood_seconds}s" --timeout 10s \
      -s "$bench/login.lua" "$base" >"$work/wrk-login-flood$name.txt" &
    flood_pid=$!
    background_pids+=("$flood_pid")
    sleep 1
    run_wrk "me-flood$name" me-paced.lua 1 2 "$me_seconds"
    wait "$flood_pid" || die "the login flood failed"
    statuses >"$work/status-login-flood$name.after"
    cat "$work/wrk-login-flood$name.json" >&2
  done
}
isolation ""
if [ "$nproc" -gt 1 ]; then
  stop_service
  service_settings=("AUTH_MAX_CONCURRENT_HASHES=$(( nproc - 1 ))")
  start_service
  service_settings=()
  ACCESS_TOKEN=$(access_token)
  isolation -reserved
fi
if [ "$autogroup_at_start" = 1 ] && set_autogroup 0; then
  autogroup_restore=1
  log "kernel.sched_autogroup_enabled 0 for the next runs (set back to 1 after them)"
  # A process keeps the group it had; the restarted service, its new database connections' backends
  # and the new wrk processes all start outside any autogroup.
  stop_service
  start_service
  ACCESS_TOKEN=$(access_token)
  isolation -ungrouped
  set_autogroup 1
  autogroup_restore=""
else
  log "kernel autogroup is off or cannot be changed here: no separate ungrouped isolation run"
fi

# 7. image size.
image_bytes=""
if command -v docker >/dev/null 2>&1; then
  image_bytes=$(docker image inspect latchkey-api:dev --format '{{.Size}}' 2>/dev/null || true)
fi

stop_service

# --- 8. report -------------------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name|^Model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu_model" ] || cpu_model=$(lscpu 2>/dev/null | awk -F': *' '/Model name/ { print $2; exit }')
sha_ext=no
if grep -qwE 'sha_ni|sha2' /proc/cpuinfo; then sha_ext=yes; fi
cat >"$work/env.json" <<EOF
{"started_at": "$started_at", "cpu_model": "$cpu_model", "cores": $nproc, "sha_extensions": "$sha_ext",
 "arch": "$(uname -m)", "kernel": "$(uname -r)", "load_at_start": $load_at_start,
 "uptime_at_start": "$uptime_at_start", "autogroup": "$autogroup_at_start", "postgres": "$("${psql_admin[@]}" -d postgres -tA -c 'SHOW server_version')",
 "git_commit": "$(git rev-parse --short HEAD)", "build_seconds": $build_seconds, "run_seconds": $(( $(date +%s) - run_started )), "duration_s": $duration,
 "ready_cold_ms": $ready_cold_ms, "ready_warm_ms": $ready_warm_ms,
 "rss_idle_kb": $rss_idle_kb, "rss_load_kb": $rss_load_kb, "rss_after_load_kb": $rss_after_load_kb,
 "image_bytes": ${image_bytes:-null}, "users_small": $users_small, "users_large": $users_large,
 "seed_users_seconds": $seed_users_seconds, "seed_sessions_seconds": $seed_sessions_seconds,
 "peer": "fastapi-users $peer_version (bench/peer/app.py: SQLAlchemy + asyncpg, pool 16 per worker, bearer + JWT strategy), 2 uvicorn workers, PostgreSQL of its own"}
EOF
python3 "$bench/report.py" "$work" "$bench"
log "wrote bench/RESULTS.md, bench/results.json and bench/results.png"
