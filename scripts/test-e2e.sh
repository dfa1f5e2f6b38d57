#!/usr/bin/env bash
# `make test-e2e`: the front-end in headless Chromium (Debian's package, driven by Playwright for
# Python) through Debian's nginx running the real frontend/nginx.conf, in front of api-container
# and a throwaway PostgreSQL. Each test module starts its own database, back-end and nginx on free
# loopback ports (tests/e2e/harness.py); this script provides what they share and stops everything
# afterwards, also when the tests fail or the run is interrupted.
#
#   scripts/test-e2e.sh [pytest arguments...]      e.g. scripts/test-e2e.sh -k keyboard -x
#
# With DATABASE_URL set (an admin URL), that server is used instead of a throwaway cluster.
# Screenshots and logs go to artifacts/e2e/ (E2E_ARTIFACTS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

die() { echo "test-e2e.sh: $*" >&2; exit 1; }

chromium=${E2E_CHROMIUM:-/usr/bin/chromium}

# ---- what the machine needs, installed when missing ----------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -x "$chromium" ] || need+=(chromium)
command -v envsubst >/dev/null 2>&1 || need+=(gettext-base)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3 python3-pip)
# Without any font, Chromium draws the screenshots' text as boxes.
[ -n "$(fc-list 2>/dev/null | head -n 1)" ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]} (Debian packages)"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and no apt-get: install them and try again"
  # Another apt run (an image's set-up, say) may hold the lock for a while: wait for it.
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null \
    || die "could not install ${need[*]}: run 'sudo apt-get install ${need[*]}' and try again"
fi
export PATH="$PATH:/usr/sbin"

# The pinned Python packages, installed only when one is missing or at another version.
if ! python3 - tests/e2e/requirements.txt <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pinned = line.split("==")
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  echo "==> installing tests/e2e/requirements.txt (pip)"
  python3 -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt \
    || die "pip could not install tests/e2e/requirements.txt; with a system Python that refuses (externally managed), create a virtualenv (python3 -m venv .venv && . .venv/bin/activate) and run this again"
fi

# ---- the back-end binary --------------------------------------------------------------------
echo "==> building api-container"
cargo build --locked --quiet -p api-container
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export E2E_API_BIN="$target_dir/debug/api-container"
[ -x "$E2E_API_BIN" ] || die "built api-container but $E2E_API_BIN is missing"

# ---- shared state and cleanup -----------------------------------------------------------------
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-e2e.XXXXXX")
# nginx's workers run as nobody when this runs as root: they must reach their folder.
chmod 755 "$run_dir"
cluster=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Whatever pytest left running (it stops its own, unless it was killed): the pids it recorded,
  # each checked to still be one of ours before it is signalled.
  if [ -f "$run_dir/pids" ]; then
    while read -r pid; do
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'api-container|nginx'; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done <"$run_dir/pids"
    sleep 0.5
    while read -r pid; do
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'api-container|nginx'; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$run_dir/pids"
  fi
  if [ -n "$cluster" ]; then
    scripts/pg.sh stop "$cluster" || true
    rm -rf "$cluster"
  fi
  rm -rf "$run_dir"
  exit "$status"
}
trap cleanup EXIT
# pytest runs in the background so that a signal reaches this script at once (bash runs traps
# only between commands); it is passed on as TERM, which conftest.py turns into an interrupt
# that tears every fixture down.
pytest_pid=""
# shellcheck disable=SC2317  # called by the INT and TERM traps
interrupted() {
  if [ -n "$pytest_pid" ]; then
    kill -TERM "$pytest_pid" 2>/dev/null || true
    wait "$pytest_pid" 2>/dev/null || true
  fi
  exit "$1"
}
trap 'interrupted 130' INT
trap 'interrupted 143' TERM
export E2E_RUN_DIR="$run_dir"

if [ -n "${DATABASE_URL:-}" ]; then
  export E2E_DATABASE_URL="$DATABASE_URL"
else
  cluster=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-e2e-pg.XXXXXX")
  chmod 755 "$cluster"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$port"
  scripts/pg.sh start "$cluster" "$port" --throwaway
  export E2E_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
fi

export E2E_ARTIFACTS="${E2E_ARTIFACTS:-$root/artifacts/e2e}"
rm -rf "$E2E_ARTIFACTS"
mkdir -p "$E2E_ARTIFACTS"
export E2E_CHROMIUM="$chromium"

echo "==> end-to-end tests (Chromium $("$chromium" --version 2>/dev/null | awk '{print $2}'), nginx, api-container)"
# Only the plugins this suite asks for, whatever else the machine has installed.
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
# A hung browser call must fail the run, not hold it: faulthandler prints every thread's stack
# after 5 minutes in one test, and the whole suite is stopped after 30.
timeout --signal=TERM 1800 python3 -m pytest -p no:cacheprovider -o faulthandler_timeout=300 tests/e2e "$@" &
pytest_pid=$!
status=0
wait "$pytest_pid" || status=$?
pytest_pid=""
echo "==> screenshots and logs in ${E2E_ARTIFACTS#"$root"/}"
exit "$status"
