#!/usr/bin/env bash
# Schemathesis against the served OpenAPI document: no 5xx, and no response that contradicts the
# document. Needs DATABASE_URL (an admin URL; scripts/test.sh provides one) and a built
# api-container; runs on its own database and drops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATABASE_URL:?DATABASE_URL must name a PostgreSQL cluster (make test sets it)}"
schemathesis_version=4.32.5
if ! command -v schemathesis >/dev/null 2>&1 || [ "$(schemathesis --version | awk '{print $3}')" != "$schemathesis_version" ]; then
  echo "==> installing schemathesis $schemathesis_version"
  # Into this Python's own packages when it may write there (root, a virtualenv, setup-python's);
  # else into the user's (~/.local), which a virtualenv could not see.
  user_flag=()
  python3 -c 'import os, sys, sysconfig; sys.exit(not os.access(sysconfig.get_paths()["purelib"], os.W_OK))' \
    || user_flag=(--user)
  python3 -m pip install -q "${user_flag[@]}" "schemathesis==$schemathesis_version"
  export PATH="$HOME/.local/bin:$PATH"
fi

admin=${DATABASE_URL%%\?*}
base=${admin%/*}
db="latchkey_fuzz_$$"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
psql -X -q "$admin" -c "CREATE DATABASE $db"
server=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  [ -z "$server" ] || { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
  psql -X -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  if [ "${KEEP_FUZZ_LOG:-}" = 1 ]; then cp "$log" /tmp/fuzz-server.log; fi
  rm -f "$log"
}
trap cleanup EXIT

cargo build --locked -q -p api-container
# The limits are part of the contract, but a fuzzer that trips them learns nothing else.
DATABASE_URL="$base/$db?sslmode=disable" LISTEN_ADDR="127.0.0.1:$port" AUTH_PBKDF2_ITERATIONS=1000 \
  AUTH_IP_LOGINS_PER_MINUTE=0 AUTH_IP_REGISTRATIONS_PER_HOUR=0 AUTH_LOGIN_FREE_FAILURES=1000 \
  AUTH_LOGIN_ACCOUNT_FAILURES=100000 AUTH_COOKIE_SECURE=false LOG_FORMAT=json \
  "${CARGO_TARGET_DIR:-target}/debug/api-container" >"$log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

# The signed-in endpoints run as a real account with a bearer token, in a pass of their own:
# fuzzing logout with that token would end the session under the other operations.
token=$(curl -sf -X POST "http://127.0.0.1:$port/api/v1/auth/register" -H 'content-type: application/json' \
  -d '{"email": "fuzz@example.com", "password": "fuzzing quietly with many examples"}' \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

status=0
schema="http://127.0.0.1:$port/api/v1/openapi.json"
common=(--checks all --max-examples 40 --workers 2 --seed 20261128 --suppress-health-check too_slow)
echo "==> schemathesis: public endpoints"
schemathesis --config-file schemathesis.toml run "$schema" "${common[@]}" \
  --exclude-tag account --exclude-tag sessions || status=$?
echo "==> schemathesis: signed-in endpoints"
schemathesis --config-file schemathesis.toml run "$schema" "${common[@]}" \
  --include-tag account --include-tag sessions -H "Authorization: Bearer $token" || status=$?
if grep -q '"status":5[0-9][0-9]' "$log"; then
  echo "the service answered 5xx during fuzzing:" >&2
  grep '"status":5' "$log" | head -5 >&2
  status=1
fi
exit "$status"
