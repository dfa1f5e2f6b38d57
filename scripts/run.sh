#!/usr/bin/env bash
# `make run`: a local PostgreSQL in .data/ of the checkout (kept between runs) and the service with
# the front-end at http://127.0.0.1:8080. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

pg_dir="$root/.data/postgres"
pg_port=${LATCHKEY_PG_PORT:-54329}
scripts/pg.sh start "$pg_dir" "$pg_port"

service_pid=""
stop() {
  trap - INT TERM EXIT
  # Ctrl-C also ends a pager or tee reading our output; losing it must not skip the cleanup.
  trap '' PIPE
  if [ -n "$service_pid" ] && kill -0 "$service_pid" 2>/dev/null; then
    kill -TERM "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  echo "==> stopping PostgreSQL (data kept in $pg_dir)" || true
  scripts/pg.sh stop "$pg_dir"
}
trap stop INT TERM EXIT

psql_admin=(psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres)
if ! "${psql_admin[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'latchkey'" | grep -q 1; then
  "${psql_admin[@]}" -c "CREATE DATABASE latchkey"
fi

# LATCHKEY_API_BIN: run this api-container binary instead of building one (scripts/test-run.sh
# uses it: the throwaway user it runs `make run` as has no Rust toolchain of its own).
api_bin=${LATCHKEY_API_BIN:-}
if [ -n "$api_bin" ]; then
  if [ ! -f "$api_bin" ] || [ ! -x "$api_bin" ]; then
    echo "run.sh: LATCHKEY_API_BIN=$api_bin is not an executable file" >&2
    exit 2
  fi
else
  echo "==> building api-container"
  cargo build --locked -p api-container
  api_bin="${CARGO_TARGET_DIR:-$root/target}/debug/api-container"
fi

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:$pg_port/latchkey?sslmode=verify-full}"
export DB_CA_FILE="${DB_CA_FILE:-$pg_dir/ca.crt}"
export LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:8080}"
export AUTH_ISSUER="${AUTH_ISSUER:-http://127.0.0.1:8080}"
# Plain http on localhost: a Secure cookie would not be sent back by every browser.
export AUTH_COOKIE_SECURE="${AUTH_COOKIE_SECURE:-false}"
if [ -d "$root/frontend/public" ]; then
  export STATIC_DIR="${STATIC_DIR:-$root/frontend/public}"
fi

echo "==> Latchkey at http://$LISTEN_ADDR (Ctrl-C stops it)"
if [ -z "${SMTP_URL:-}" ]; then
  # Deliberate development mode: follow verification and reset links from the log.
  echo "==> SMTP_URL is unset: mail is not sent; each mail (reset links, and verification links when AUTH_EMAIL_VERIFICATION is set) is written to this log"
fi
"$api_bin" &
service_pid=$!
wait "$service_pid"
