#!/usr/bin/env bash
# `make test`: formatting, lints, then every test against real PostgreSQL. Without DATABASE_URL a
# throwaway cluster is started in a temporary folder and removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> shellcheck"
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck scripts/*.sh .ci/run api-container/build-image.sh api-container/deploy/latchkey-deploy api-container/deploy/install.sh infra/host/*.sh \
    frontend/build-image.sh frontend/deploy/latchkey-frontend-deploy
else
  echo "shellcheck is not installed: skipping the shell lint (apt-get install shellcheck)"
fi
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> GitHub Actions workflows (schema, pipeline shape)"
scripts/test-workflows.sh
echo "==> the AWS environment (cfn-lint, sam validate, checkov, the stack on moto)"
scripts/test-infra.sh

if [ -z "${DATABASE_URL:-}" ]; then
  cluster=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-test-pg.XXXXXX")
  chmod 755 "$cluster"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cleanup() {
    scripts/pg.sh stop "$cluster" || true
    rm -rf "$cluster"
  }
  trap cleanup EXIT
  echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$port"
  scripts/pg.sh start "$cluster" "$port" --throwaway
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  export LATCHKEY_TEST_CA="$cluster/ca.crt"
fi

echo "==> fuzzing the API against its OpenAPI document"
scripts/test-fuzz.sh

# The front-end in a real browser through nginx, on this script's PostgreSQL (DATABASE_URL).
# A failure is reported after the Rust suites, so their summary still closes the output.
echo "==> end-to-end tests of the front-end"
e2e_status=0
scripts/test-e2e.sh || e2e_status=$?

# `make run` (fresh clone, data kept, Ctrl-C stops everything) and the test cluster as a normal
# user; as root it creates the user latchkey-run.
echo "==> make run and make test's PostgreSQL as a normal user (scripts/test-run.sh)"
scripts/test-run.sh

# The image and the host deploy script need a Docker engine; without one they are skipped, loudly.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "==> test-deploy (the image and the host deploy script, on the Docker engine)"
  scripts/test-deploy.sh
  # Each host's script runs in a mount namespace of its own: root, or passwordless sudo for it.
  if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    echo "==> test-chain (image -> registry and moto's ECR -> deploy Lambda -> SSM document -> two hosts behind the front-end, under load)"
    scripts/test-chain.sh
  else
    echo "==> SKIPPED test-chain: it needs root or passwordless sudo (unshare --mount): the deploy chain was NOT tested"
  fi
else
  echo "==> SKIPPED test-deploy: no Docker engine answers ('docker info' failed): the image and the host deploy script were NOT tested"
  echo "==> SKIPPED test-chain: no Docker engine answers: the deploy chain was NOT tested"
fi

# Before the Rust suites: the deploy Lambda's moto tests use the virtualenv this script sets up.
echo "==> the Lambdas: cfn-lint, sam validate --lint, sam build (arm64), cargo lambda watch + invoke"
scripts/test-lambda.sh

# `sam local invoke` and `sam local start-api` need a Docker engine too; skipped, loudly, without one.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "==> test-sam-local (both Lambdas under sam local invoke and start-api, on the Docker engine)"
  scripts/test-sam-local.sh
else
  echo "==> SKIPPED test-sam-local: no Docker engine answers ('docker info' failed): sam local was NOT tested"
fi

# The kdf crate's ARMv8 SHA-2 backend (the Lambda's) with its vectors and proptests, under QEMU.
echo "==> the kdf tests on aarch64 (scripts/test-kdf-arm.sh)"
scripts/test-kdf-arm.sh

# The Rust suites run last, so that their summary closes the output.
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked
fi

if [ "$e2e_status" -ne 0 ]; then
  echo "==> the end-to-end tests failed (pytest exit code $e2e_status)" >&2
  exit "$e2e_status"
fi
