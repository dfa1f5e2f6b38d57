#!/usr/bin/env bash
# `make test-deploy`: the api-container image and the host deploy script
# (api-container/deploy/latchkey-deploy) against this machine's real Docker engine, a local
# registry (Debian's docker-registry on 127.0.0.1), a private nginx and a throwaway PostgreSQL.
# All of them are started here, on free loopback ports, and removed at the end, whatever happens.
#
# What it proves, in order:
#   the image: builds FROM scratch, < 20 MB, non-root, OCI labels, HEALTHCHECK turns healthy,
#     serves register/login/me, stops gracefully on SIGTERM, `healthcheck` fails when nothing answers
#   the script: refuses a tag and a readable env file; a first deploy; v1 -> v2 under a steady
#     load with zero failed requests; a release that never gets ready and one that crashes: the
#     script fails and says why, v2 keeps serving, nothing is left over, zero failed requests;
#     the same digest again is a no-op; two deploys started together run one after the other;
#     rollback returns to the previous digest; only the last two images stay on the host.
#
# Needs a Docker engine (`docker info`); installs what else is missing with apt-get.
#
# shellcheck disable=SC2015 # `check && check || fail` is meant: fail exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

began=$SECONDS
checks=0
step() { printf '==> [%3ss] %s\n' "$((SECONDS - began))" "$*"; }
ok() { printf '    ok: %s\n' "$*"; checks=$((checks + 1)); }
fail() {
  printf '    FAILED: %s\n' "$*" >&2
  exit 1
}
indent() { sed 's/^/      | /'; }

if ! docker info >/dev/null 2>&1; then
  echo "test-deploy: no Docker engine answers (docker info failed): start dockerd, or set DOCKER_HOST" >&2
  exit 1
fi

# --------------------------------------------------------------------------------------------
# Tools. Everything the deploy script needs on a host, plus the registry and musl-gcc.

need=()
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v file >/dev/null 2>&1 || need+=(file)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  command -v apt-get >/dev/null 2>&1 || fail "missing ${need[*]} and no apt-get to install them with"
  # Another apt run may hold the lock for a while (a fresh machine's provisioning): wait for it.
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# --------------------------------------------------------------------------------------------
# Names, ports and folders for this run only, so that it collides with nothing (a real
# deployment on this machine included) and cleans up exactly what it made.

run=$$
name=latchkey-deploytest-$run
local_repo=latchkey-deploytest-$run
read -r pg_port registry_port public_port blue_port green_port direct_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
repo=127.0.0.1:$registry_port/latchkey/api
work=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-test-deploy.XXXXXX")
# The postgres user (pg.sh as root) and nginx's workers must reach their folders inside.
chmod 755 "$work"
mkdir -p "$work/logs" "$work/nginx" "$work/state" "$work/registry" "$work/context"
registry_pid=
load_pid=
deploy=(env "LATCHKEY_DEPLOY_CONF=$work/deploy.conf" "$root/api-container/deploy/latchkey-deploy")

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$load_pid" ]; then kill "$load_pid" 2>/dev/null; fi
  if [ "$rc" -ne 0 ]; then
    echo "--- logs of the failed run (kept only until clean-up) ---" >&2
    for f in "$work"/logs/*.log "$work"/nginx/error.log; do
      [ -s "$f" ] || continue
      echo "--- $f (last 25 lines)" >&2
      tail -n 25 "$f" >&2
    done
    for c in $(docker ps -aq --filter "name=$name-"); do
      echo "--- docker logs $c (last 15 lines)" >&2
      docker logs --tail 15 "$c" >&2 2>&1
    done
  fi
  local ids
  ids=$(docker ps -aq --filter "name=$name-")
  # shellcheck disable=SC2086 # one id per word
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
  local master
  master=$(cat "$work/nginx/nginx.pid" 2>/dev/null)
  if [ -n "$master" ] && kill -0 "$master" 2>/dev/null; then
    kill -TERM "$master"
    for _ in $(seq 50); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null
    wait "$registry_pid" 2>/dev/null
  fi
  # Every image reference this run made: the local tags and whatever was pulled from the registry.
  local ref
  for ref in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$local_repo" | grep -v ':<none>$') \
    $(docker image ls --digests --format '{{.Repository}}@{{.Digest}}' "$repo" | grep -v '@<none>$') \
    $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -v ':<none>$'); do
    docker image rm "$ref" >/dev/null 2>&1
  done
  scripts/pg.sh stop "$work/pg" >/dev/null 2>&1
  rm -rf "$work"
  if [ "$rc" -eq 0 ]; then
    echo "test-deploy: $checks checks passed in $((SECONDS - began))s"
  else
    echo "test-deploy: FAILED (exit $rc) after $((SECONDS - began))s" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls `command...` every 0.2 s until it succeeds, for at most `seconds`.
wait_for() { # seconds description command...
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${seconds}s"
    sleep 0.2
  done
}

# --------------------------------------------------------------------------------------------
step "building the image (make image: static musl binary, FROM scratch) as v1 and v2"
IMAGE=$local_repo:v1 VERSION=v1 api-container/build-image.sh 2>&1 | grep -v -e DEPRECATED -e 'legacy builder' -e buildx -e '^ *$' | indent
# The same binary with another version label: another digest, as a new release would have.
IMAGE=$local_repo:v2 VERSION=v2 api-container/build-image.sh >/dev/null 2>&1
step "building the broken releases (FROM scratch around a static C stand-in)"
musl-gcc -static -s -Os -o "$work/context/never-ready" tests/deploy/never_ready.c
cp tests/deploy/never-ready.Dockerfile "$work/context/Dockerfile"
docker build --quiet -t "$local_repo:never-ready" --build-arg MODE=serve "$work/context" >/dev/null 2>&1
docker build --quiet -t "$local_repo:crash" --build-arg MODE=exit-now --build-arg VERSION=crash "$work/context" >/dev/null 2>&1
ok "built $local_repo:{v1,v2,never-ready,crash}"

# --------------------------------------------------------------------------------------------
step "PostgreSQL on 127.0.0.1:$pg_port"
scripts/pg.sh start "$work/pg" "$pg_port" --throwaway
cat >"$work/api.env" <<ENV
# The service's environment, as /etc/latchkey/api.env holds it on a host.
# TLS verified against the cluster's own CA, as against RDS: the CA file is mounted (DB_CA_FILE).
DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres?sslmode=verify-full
# PBKDF2 keeps its production cost (600000): logins, a tenth of the load, take long enough to be
# in flight now and then when a slot is retired.
AUTH_COOKIE_SECURE=false
AUTH_KEY_ENCRYPTION_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
AUTH_TRUSTED_PROXIES=127.0.0.1/32
AUTH_IP_LOGINS_PER_MINUTE=0
AUTH_IP_REGISTRATIONS_PER_HOUR=0
RUST_LOG=warn
ENV
chmod 600 "$work/api.env"

# --------------------------------------------------------------------------------------------
step "the image itself"
image=$local_repo:v1
size=$(docker image inspect -f '{{.Size}}' "$image")
[ "$size" -lt 20000000 ] || fail "the image is $size bytes, not under 20 MB"
ok "size $((size / 1024)) KiB (< 20 MB)"
[ "$(docker image inspect -f '{{len .RootFS.Layers}}' "$image")" = 1 ] || fail "expected one layer (FROM scratch + the binary)"
ok "one layer: FROM scratch and the binary"
user=$(docker image inspect -f '{{.Config.User}}' "$image")
case $user in "" | 0 | 0:* | root | root:*) fail "the image runs as root ('$user')" ;; esac
ok "runs as $user"
[ "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")" = v1 ] || fail "no OCI version label"
[ -n "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image")" ] || fail "no OCI revision label"
ok "OCI labels (version v1, revision, source, created, licenses)"
healthcheck=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$image")
[ "$healthcheck" = '["CMD","/api-container","healthcheck"]' ] || fail "HEALTHCHECK is $healthcheck"
ok "HEALTHCHECK runs the binary itself: $healthcheck"

# The interval is shortened here only so the test need not wait 10 s for the first probe.
docker run --detach --name "$name-direct" --network host --env-file "$work/api.env" \
  --volume "$work/pg/ca.crt:/etc/latchkey/db-ca.pem:ro" --env DB_CA_FILE=/etc/latchkey/db-ca.pem \
  --env "LISTEN_ADDR=127.0.0.1:$direct_port" --health-interval 1s --read-only --cap-drop ALL \
  "$image" >/dev/null
is_healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$name-direct")" = healthy ]; }
wait_for 60 "the container's HEALTHCHECK turning healthy" is_healthy
ok "the container's HEALTHCHECK reports healthy"
pid=$(docker inspect -f '{{.State.Pid}}' "$name-direct")
[ "$(stat -c %u "/proc/$pid")" = 10001 ] || fail "the process runs as uid $(stat -c %u "/proc/$pid")"
ok "the process runs as uid 10001"
out=$(docker exec "$name-direct" /api-container healthcheck) || fail "healthcheck in the container failed"
ok "'api-container healthcheck' in the container: $out"
out=$(python3 tests/deploy/smoke.py "$direct_port") || fail "smoke test on the container: $out"
ok "serves: $out"
docker stop --time 35 "$name-direct" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name-direct")
[ "$code" = 0 ] || fail "SIGTERM: the container exited $code, not 0"
ok "docker stop (SIGTERM to PID 1): drained and exited 0"
docker rm "$name-direct" >/dev/null
set +e
out=$(docker run --rm --network host --env "LISTEN_ADDR=127.0.0.1:$direct_port" "$image" healthcheck 2>&1)
code=$?
set -e
[ "$code" = 1 ] || fail "healthcheck with nothing listening exited $code: $out"
ok "healthcheck with nothing listening exits 1: $out"

# --------------------------------------------------------------------------------------------
step "local registry (docker-registry) on 127.0.0.1:$registry_port"
cat >"$work/registry/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
YML
docker-registry serve "$work/registry/config.yml" >"$work/logs/registry.log" 2>&1 &
registry_pid=$!
wait_for 30 "the registry answering" curl -sf "http://127.0.0.1:$registry_port/v2/"
declare -A ref
for tag in v1 v2 never-ready crash; do
  docker tag "$local_repo:$tag" "$repo:$tag"
  docker push --quiet "$repo:$tag" >"$work/logs/push-$tag.log" 2>&1 || fail "docker push $repo:$tag: $(cat "$work/logs/push-$tag.log")"
  ref[$tag]=$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$repo:$tag" | grep -m1 "^$repo@sha256:")
done
# Gone from this host: the deploys must pull them from the registry, by digest.
for tag in v1 v2 never-ready crash; do
  docker image rm "$repo:$tag" "$local_repo:$tag" >/dev/null
  docker image rm "${ref[$tag]}" >/dev/null 2>&1 || true # gone with its last tag, usually
done
for tag in v1 v2 never-ready crash; do
  docker image inspect "${ref[$tag]}" >/dev/null 2>&1 && fail "${ref[$tag]} is still on the host"
done
ok "pushed and removed locally: v1 ${ref[v1]##*:}"
printf '        v2 %s\n        never-ready %s\n        crash %s\n' "${ref[v2]##*:}" "${ref[never-ready]##*:}" "${ref[crash]##*:}"

# --------------------------------------------------------------------------------------------
step "a host: settings, nginx (private instance on 127.0.0.1:$public_port), latchkey-deploy init"
cat >"$work/deploy.conf" <<CONF
# As /etc/latchkey/deploy.conf on a host, but with this run's folders, names and ports.
ENV_FILE=$work/api.env
DB_CA_FILE=$work/pg/ca.crt
STATE_DIR=$work/state
LOCK_FILE=$work/state/deploy.lock
LOCK_WAIT=120
CONTAINER_NAME=$name
LISTEN=127.0.0.1:$public_port
BLUE_PORT=$blue_port
GREEN_PORT=$green_port
READY_TIMEOUT=15
DRAIN_TIMEOUT=35
REGISTRY_LOGIN=auto
NGINX_CONF=$work/nginx/nginx.conf
NGINX_SITE_FILE=$work/nginx/latchkey.conf
NGINX_UPSTREAM_FILE=$work/nginx/upstream.conf
NGINX_PID_FILE=$work/nginx/nginx.pid
CONF
cat >"$work/nginx/nginx.conf" <<NGINX
# The host's /etc/nginx/nginx.conf, reduced to what this test needs.
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    include $work/nginx/latchkey.conf;
}
NGINX
mkdir -p "$work/nginx/tmp"
"${deploy[@]}" init >"$work/logs/init.log" 2>&1 || fail "latchkey-deploy init: $(cat "$work/logs/init.log")"
indent <"$work/logs/init.log"
nginx -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf"
wait_for 10 "nginx answering" curl -s "http://127.0.0.1:$public_port/"
code=$(curl -s -o "$work/body" -w '%{http_code} %{content_type}' "http://127.0.0.1:$public_port/readyz")
[ "$code" = "503 application/problem+json" ] || fail "before the first deploy nginx answered $code"
ok "before the first deploy: 503 application/problem+json from nginx"

# Runs the deploy script; its output goes to logs/NAME.log and is shown indented.
run_deploy() { # name args...
  local log=$work/logs/$1.log
  shift
  set +e
  "${deploy[@]}" "$@" >"$log" 2>&1
  deploy_rc=$?
  set -e
  indent <"$log"
  deploy_out=$(cat "$log")
}

containers() { docker ps -aq --filter "name=$name-" | wc -l; }
serving_container() { docker ps -q --filter "name=$name-" --filter status=running | head -n 1; }
serving_image() { docker inspect -f '{{.Config.Image}}' "$(serving_container)"; }
expect_serving() { # tag
  local image
  image=$(serving_image)
  [ "$image" = "${ref[$1]}" ] || fail "expected $1 (${ref[$1]}) to serve, found $image"
  [ "$(containers)" = 1 ] || fail "expected one container, found: $(docker ps -a --filter "name=$name-" --format '{{.Names}} {{.Status}}')"
  local out
  out=$(python3 tests/deploy/smoke.py "$public_port") || fail "through nginx: $out"
  ok "$1 serves through nginx, one container left ($(docker ps --filter "name=$name-" --format '{{.Names}}')): $out"
}

load_start() { # label
  load_label=$1
  rm -f "$work/load.stop" "$work/load.ready"
  python3 tests/deploy/load.py --port "$public_port" --rate 80 --workers 4 --max-seconds 150 \
    --stop-file "$work/load.stop" --ready-file "$work/load.ready" --out "$work/load-$1.json" \
    >"$work/logs/load-$1.log" 2>&1 &
  load_pid=$!
  local deadline=$((SECONDS + 40))
  until [ -f "$work/load.ready" ]; do
    kill -0 "$load_pid" 2>/dev/null || fail "the load generator stopped: $(cat "$work/logs/load-$1.log")"
    [ "$SECONDS" -lt "$deadline" ] || fail "the load generator got no 20 answers within 40s"
    sleep 0.2
  done
}

load_check() {
  # Requests keep coming after the deploy returns: the new slot must take them too.
  sleep 2
  touch "$work/load.stop"
  local deadline=$((SECONDS + 30))
  while kill -0 "$load_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the load generator did not stop within 30s"
    sleep 0.2
  done
  wait "$load_pid" || fail "the load generator failed: $(cat "$work/logs/load-$load_label.log")"
  load_pid=
  python3 - "$work/load-$load_label.json" <<'PY' || fail "requests failed under load (see above)"
import json, sys
s = json.load(open(sys.argv[1]))
print(f"    load: {s['requests']} requests in {s['seconds']} s ({s['rate']}/s), {s['failures']} failed, "
      f"{s['stale_keepalive_retries']} keep-alive retries")
print(f"          {s['by_outcome']}; latency ms {s['latency_ms']}")
for f in s["first_failures"]:
    print(f"      failure: {f}")
sys.exit(1 if s["failures"] or s["requests"] < 200 else 0)
PY
  ok "zero failed requests under load"
}

# --------------------------------------------------------------------------------------------
step "refusals: a tag instead of a digest, an env file others can read"
run_deploy refuse-tag deploy "$repo:v1"
[ "$deploy_rc" != 0 ] && [[ $deploy_out == *"by digest only"* ]] || fail "a tag was not refused"
ok "a tag is refused"
chmod 644 "$work/api.env"
run_deploy refuse-mode deploy "${ref[v1]}"
chmod 600 "$work/api.env"
[ "$deploy_rc" != 0 ] && [[ $deploy_out == *"mode 644"* ]] || fail "an env file with mode 644 was not refused"
ok "an env file with mode 644 is refused"

step "first deploy: v1"
run_deploy first deploy "${ref[v1]}"
[ "$deploy_rc" = 0 ] || fail "the first deploy exited $deploy_rc"
[[ $deploy_out == *"pulling ${ref[v1]}"* ]] || fail "v1 was not pulled"
expect_serving v1

step "upgrade v1 -> v2 under load"
load_start upgrade
run_deploy upgrade deploy "${ref[v2]}"
[ "$deploy_rc" = 0 ] || fail "the upgrade exited $deploy_rc"
load_check
expect_serving v2
v2_container=$(serving_container)

step "a release that never becomes ready, under load"
load_start never-ready
start=$SECONDS
run_deploy never-ready deploy "${ref[never-ready]}"
[ "$deploy_rc" != 0 ] || fail "the deploy of a release that never gets ready exited 0"
[[ $deploy_out == *"was not ready within 15s"*"still serves"* ]] || fail "the failure does not say why"
ok "exit $deploy_rc after $((SECONDS - start))s, saying: $(grep -m1 'error:' <<<"$deploy_out" | sed 's/.*error: //' | cut -c1-160)..."
load_check
expect_serving v2
[ "$(serving_container)" = "$v2_container" ] || fail "the v2 container was replaced"
ok "the same v2 container still serves"

step "a release that crashes at start"
start=$SECONDS
run_deploy crash deploy "${ref[crash]}"
[ "$deploy_rc" != 0 ] || fail "the deploy of a crashing release exited 0"
[[ $deploy_out == *"stopped before it became ready"* ]] || fail "the failure does not say the container stopped"
[ $((SECONDS - start)) -lt 15 ] || fail "the crash was noticed only after the ready timeout"
ok "noticed in $((SECONDS - start))s (before the 15s ready timeout), exit $deploy_rc"
expect_serving v2
[ "$(serving_container)" = "$v2_container" ] || fail "the v2 container was replaced"

step "a deploy interrupted (SIGTERM, as SSM cancels) while the new container starts"
"${deploy[@]}" deploy "${ref[never-ready]}" >"$work/logs/interrupted.log" 2>&1 &
pid=$!
new_slot_exists() { [ "$(containers)" = 2 ]; }
wait_for 30 "the interrupted deploy starting its container" new_slot_exists
kill -TERM "$pid"
set +e
wait "$pid"
code=$?
set -e
indent <"$work/logs/interrupted.log"
[ "$code" != 0 ] || fail "the interrupted deploy exited 0"
ok "the interrupted deploy exited $code"
expect_serving v2
[ "$(serving_container)" = "$v2_container" ] || fail "the v2 container was replaced"
grep -q "127.0.0.1:$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$v2_container" | sed -n 's/^LISTEN_ADDR=127.0.0.1://p');" "$work/nginx/upstream.conf" \
  || fail "the upstream file no longer points at v2: $(cat "$work/nginx/upstream.conf")"
ok "its container removed, the upstream file untouched"

step "the same digest again"
run_deploy same deploy "${ref[v2]}"
[ "$deploy_rc" = 0 ] && [[ $deploy_out == *"already serves"* ]] || fail "deploying the serving digest again was not a no-op"
[ "$(serving_container)" = "$v2_container" ] || fail "the v2 container was replaced"
ok "a no-op: same container, exit 0"

step "two deploys of v1 started together, under load"
load_start together
set +e
"${deploy[@]}" deploy "${ref[v1]}" >"$work/logs/together-a.log" 2>&1 &
pid_a=$!
"${deploy[@]}" deploy "${ref[v1]}" >"$work/logs/together-b.log" 2>&1 &
pid_b=$!
wait "$pid_a"
rc_a=$?
wait "$pid_b"
rc_b=$?
set -e
for x in a b; do
  echo "      [$x]"
  indent <"$work/logs/together-$x.log"
done
[ "$rc_a" = 0 ] && [ "$rc_b" = 0 ] || fail "exit codes $rc_a and $rc_b"
waited=$(grep -l 'waiting for the lock' "$work"/logs/together-?.log | wc -l)
noop=$(grep -l 'already serves' "$work"/logs/together-?.log | wc -l)
swapped=$(grep -l 'deploy\[[0-9]*\]: deployed ' "$work"/logs/together-?.log | wc -l)
[ "$waited" = 1 ] && [ "$noop" = 1 ] && [ "$swapped" = 1 ] \
  || fail "expected one deploy to swap and the other to wait, then find v1 serving (waited $waited, no-op $noop, swapped $swapped)"
waiter=$(grep -l 'waiting for the lock' "$work"/logs/together-?.log)
grep -q 'already serves' "$waiter" || fail "the deploy that waited did not find the other's result"
ok "one swapped while the other waited for the lock, then found v1 serving: one after the other"
load_check
expect_serving v1

step "rollback, under load"
load_start rollback
run_deploy rollback rollback
[ "$deploy_rc" = 0 ] || fail "rollback exited $deploy_rc"
[[ $deploy_out == *"rolling back to ${ref[v2]}"* ]] || fail "rollback did not go back to v2"
load_check
expect_serving v2
status=$("${deploy[@]}" status)
[[ $status == *"previous: ${ref[v1]}"* ]] || fail "status after the rollback: $status"
ok "status: $(tr '\n' ' ' <<<"$status" | cut -c1-200)"

step "old images removed, the last two kept"
kept=$(docker image ls --digests --format '{{.Repository}}@{{.Digest}}' "$repo" | sort)
expected=$(printf '%s\n' "${ref[v1]}" "${ref[v2]}" | sort)
[ "$kept" = "$expected" ] || fail "images of $repo on the host: $kept"
ok "on the host: v2 (serving) and v1 (previous); never-ready and crash removed"
