#!/usr/bin/env bash
# `make run` and `make test`'s database as a normal user, from a fresh clone (issue 20, item 7).
#
# As root it creates (once) the user latchkey-run and runs everything below as that user; as a
# normal user it runs as you. The checks:
#   1. `make run` in a fresh clone of HEAD: PostgreSQL is initialised in the clone's .data/ and the
#      service answers /readyz and serves the front-end's sign-in page; an account is registered.
#   2. SIGINT to the make process group (what Ctrl-C sends): make, the service and PostgreSQL
#      all stop; no process of the clone is left, both ports are free, no postmaster.pid remains.
#   3. `make run` again: the data is kept (the account from run 1 signs in), and SIGINT stops it
#      all again.
#   4. `make test`'s part that depends on the user: scripts/pg.sh starts a --throwaway cluster in
#      a folder of the user's (initdb without the root-only detour through the postgres user),
#      then two tests of the Rust suite run as that user against it, with the suite's own bootstrap
#      (a fresh database per test, dropped after): one over TLS with verify-full and the cluster's
#      CA, one registration through HTTP. The rest of `make test` does not care who runs it, and
#      running it twice would double the slowest check we have.
# Cargo runs as the caller (a throwaway user has no toolchain): the binaries are built first and
# handed over (LATCHKEY_API_BIN for `make run`; the api test binary itself). Ports are free ones
# picked at random, so a service already on 8080 does not matter.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
user=latchkey-run

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
fail() { echo "test-run: FAILED: $*" >&2; exit 1; }

echo "==> test-run: building api-container and the api test binary (as $(id -un))"
cargo build --locked -q -p api-container
api_tests=$(cargo test --locked -q -p auth-core --test api --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "api":
        print(m["executable"])')
[ -x "$api_tests" ] || fail "no api test binary"

as_user=()
if [ "$(id -u)" -eq 0 ]; then
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
  as_user=(runuser -u "$user" --)
else
  user=$(id -un)
fi

work=$(mktemp -d /var/tmp/latchkey-run.XXXXXX)
chmod 755 "$work"
clone="$work/clone"
group=""
cleanup() {
  status=$?
  # Only what this script started: the make process group it created, then the clusters.
  if [ -n "$group" ] && kill -0 -- "-$group" 2>/dev/null; then
    kill -TERM -- "-$group" 2>/dev/null || true
    sleep 2
  fi
  for cluster in "$clone/.data/postgres" "$work/test-pg"; do
    if [ -d "$cluster/data" ]; then
      (cd "$clone" && "${as_user[@]}" scripts/pg.sh stop "$cluster") >/dev/null 2>&1 || true
    fi
  done
  if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "test-run: kept $work for a look" >&2; fi
}
trap cleanup EXIT

git clone --quiet --no-hardlinks "$root" "$clone"
mkdir -p "$work/bin"
cp "${CARGO_TARGET_DIR:-$root/target}/debug/api-container" "$api_tests" "$work/bin/"
api_tests="$work/bin/$(basename "$api_tests")"
chmod -R a+rX "$work/bin"
[ ${#as_user[@]} -eq 0 ] || chown -R "$user" "$clone"

http_port=$(free_port)
pg_port=$(free_port)
base="http://127.0.0.1:$http_port"

# One `make run` in its own process group (setsid), as a terminal would start it in the
# foreground; the group is what Ctrl-C signals.
start_run() {
  local log=$1
  # What make test exported for its own cluster must not steer make run elsewhere.
  setsid "${as_user[@]}" env -C "$clone" -u DATABASE_URL -u DB_CA_FILE -u STATIC_DIR \
    LATCHKEY_API_BIN="$work/bin/api-container" LATCHKEY_PG_PORT="$pg_port" \
    LISTEN_ADDR="127.0.0.1:$http_port" AUTH_ISSUER="$base" AUTH_PBKDF2_ITERATIONS=1000 \
    make run >"$log" 2>&1 &
  group=$!
  for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ] && return 0
    kill -0 "$group" 2>/dev/null || { cat "$log" >&2; fail "make run exited before it was ready"; }
    sleep 1
  done
  cat "$log" >&2
  fail "make run was not ready within 120 s"
}

# Ctrl-C: SIGINT to the whole group, then nothing of it may be left.
interrupt_run() {
  local log=$1
  kill -INT -- "-$group"
  for _ in $(seq 1 60); do
    kill -0 -- "-$group" 2>/dev/null || break
    sleep 1
  done
  if kill -0 -- "-$group" 2>/dev/null; then
    ps -o pid,pgid,user,args -g "$group" >&2 || true
    fail "processes of make run were still running 60 s after SIGINT"
  fi
  group=""
  if pgrep -f "$clone" >/dev/null; then
    pgrep -af "$clone" >&2
    fail "a process of the clone outlived make run"
  fi
  for port in "$http_port" "$pg_port"; do
    python3 -c 'import socket, sys; s=socket.socket(); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) else 1)' "$port" \
      || fail "port $port is still open after SIGINT"
  done
  [ ! -e "$clone/.data/postgres/data/postmaster.pid" ] || fail "PostgreSQL did not shut down (postmaster.pid remains)"
  grep -q "stopping PostgreSQL" "$log" || { cat "$log" >&2; fail "run.sh did not stop PostgreSQL itself"; }
}

post() { curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "$2" "$base$1"; }
credentials='{"email": "run-check@example.com", "password": "correct horse battery staple"}'

echo "==> test-run: make run as $user in a fresh clone ($clone)"
start_run "$work/run1.log"
[ -f "$clone/.data/postgres/data/PG_VERSION" ] || fail "no cluster in the clone's .data/"
owner=$(stat -c %U "$clone/.data/postgres/data")
[ "$owner" = "$user" ] || fail "the cluster belongs to $owner, not $user"
curl -sf "$base/" | grep -q '<h1[^>]*>Sign in</h1>' || fail "the front-end's sign-in page is not served at /"
[ "$(post /api/v1/auth/register "$credentials")" = 201 ] || fail "registration did not answer 201"
echo "==> test-run: Ctrl-C (SIGINT to the make process group)"
interrupt_run "$work/run1.log"

echo "==> test-run: make run again keeps the data"
start_run "$work/run2.log"
[ "$(post /api/v1/auth/login "$credentials")" = 200 ] || fail "the account from the first run cannot sign in"
interrupt_run "$work/run2.log"

echo "==> test-run: make test's PostgreSQL and two Rust tests as $user"
test_pg_port=$(free_port)
mkdir "$work/test-pg"
[ ${#as_user[@]} -eq 0 ] || chown "$user" "$work/test-pg"
(cd "$clone" && "${as_user[@]}" scripts/pg.sh start "$work/test-pg" "$test_pg_port" --throwaway)
owner=$(stat -c %U "$work/test-pg/data")
[ "$owner" = "$user" ] || fail "the test cluster belongs to $owner, not $user"
"${as_user[@]}" env -C "$clone/functions/auth-core" -u LATCHKEY_SKIP_TLS_TESTS \
  DATABASE_URL="postgres://postgres@127.0.0.1:$test_pg_port/postgres?sslmode=disable" \
  LATCHKEY_TEST_CA="$work/test-pg/ca.crt" \
  "$api_tests" --exact --test-threads 1 \
  tls::verify_full_with_the_ca_file_connects_over_tls \
  register::registration_returns_a_token_response_and_the_refresh_cookie 2>&1 | tee "$work/tests.log"
grep -q "test result: ok. 2 passed" "$work/tests.log" || fail "the two tests did not both pass as $user"
(cd "$clone" && "${as_user[@]}" scripts/pg.sh stop "$work/test-pg")
[ ! -e "$work/test-pg/data/postmaster.pid" ] || fail "the test cluster did not stop"
echo "==> test-run: passed"
