#!/usr/bin/env bash
# `make test-sam-local`: both Lambdas under `sam local invoke` and `sam local start-api` on the real
# Docker engine, offline (issue 17; docs/deploy.md, "Local runs"):
#   1. scripts/sam-local.sh: static musl bootstraps for this machine's architecture, the local
#      template (.aws-sam/local/template.yaml), the FROM-scratch base image SAM builds on
#   2. pytest tests/sam_local: `sam local invoke AuthFunction` with events/auth-*.json against
#      PostgreSQL, `sam local start-api` reached over HTTP (register, login, refresh, JWKS,
#      healthz, me), `sam local invoke DeployFunction` with events/ecr-*.json against moto's
#      server (the SSM command it records, the refusals), each asserting the function's answer
#
# Uses DATABASE_URL (an admin URL; scripts/test.sh sets one) or else starts a throwaway cluster.
# Needs a Docker engine and psql. The SAM CLI, moto and pytest come from the lambda-tools
# virtualenv (scripts/requirements/lambda-tools.txt, shared with scripts/test-lambda.sh),
# installed at its pins when missing or different.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-sam-local.sh: $*" >&2; exit 1; }

command -v psql >/dev/null 2>&1 || die "psql is needed (apt-get install postgresql-client)"
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"

tools=${LATCHKEY_LAMBDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/latchkey/lambda-tools}
# The same stamp as scripts/test-lambda.sh and scripts/test-infra.sh: the pinned list itself.
wanted=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/requirements/lambda-tools.txt | tr '\n' ' ' | sed 's/ $//')
if [ ! -x "$tools/bin/python" ] || [ "$(cat "$tools/.latchkey-requirements" 2>/dev/null)" != "$wanted" ]; then
  echo "==> installing scripts/requirements/lambda-tools.txt into $tools"
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || die "python3 cannot make a virtualenv: install python3-venv"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # shellcheck disable=SC2086 # one package a word
  "$tools/bin/python" -m pip install -q --disable-pip-version-check $wanted
  echo "$wanted" >"$tools/.latchkey-requirements"
fi
export PATH="$tools/bin:$PATH" SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

scripts/sam-local.sh

cluster=""
cleanup() {
  [ -z "$cluster" ] || scripts/pg.sh stop "$cluster" || true
  [ -z "$cluster" ] || rm -rf "$(dirname "$cluster")"
}
trap cleanup EXIT
if [ -z "${DATABASE_URL:-}" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-sam-local.XXXXXX")
  cluster="$work/pg"
  mkdir -p "$cluster"
  chmod 755 "$work" "$cluster"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$port"
  scripts/pg.sh start "$cluster" "$port" --throwaway
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
fi

echo "==> pytest tests/sam_local (sam local invoke, sam local start-api, on the Docker engine)"
"$tools/bin/python" -m pytest -c tests/sam_local/pytest.ini tests/sam_local "$@"
