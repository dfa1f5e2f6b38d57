#!/usr/bin/env bash
# `make test-chain`: the deploy chain as one chain on this machine (tests/chain/): the image
# (make image) pushed to a local registry and into moto's ECR, the ECR push event from its real
# digest, the deploy Lambda (cargo lambda watch + invoke) against moto's ECR and SSM, the SSM
# document's own script from template.yaml run on two local back-end "hosts" (latchkey-deploy,
# nginx, Docker) behind nginx with frontend/nginx.conf, under load; then a front-end image
# (make frontend-image) through the same chain to the front-end "host" (latchkey-frontend-deploy),
# under load. What moto cannot emulate (the SSM agent) is played by tests/chain/chain.py; its
# docstring says how.
#
# Needs a Docker engine, and root for what a host's SSM agent would do as root: each host's script
# runs in a mount namespace of its own (unshare --mount), as root. Run as another user (a GitHub
# runner), it uses passwordless `sudo -n` for those parts and for apt-get, nothing else.
# Installs what is missing: Debian packages with apt-get, the Python tools at the versions of
# scripts/requirements/lambda-tools.txt into LATCHKEY_LAMBDA_TOOLS (the virtualenv test-lambda.sh
# uses). Extra arguments go to pytest (-k, -x, -s).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-chain.sh: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null \
    || die "not root, and 'sudo -n' is refused: each host's script runs as root in a mount namespace of its own (unshare --mount); run as root or with passwordless sudo"
  sudo=(sudo -n)
fi
# tests/chain/chain.py runs the host scripts (and removes what they wrote) with the same prefix.
export LATCHKEY_CHAIN_SUDO="${sudo[*]}"
"${sudo[@]}" unshare --mount --propagation private true 2>/dev/null || die "unshare --mount is refused here (a container without CAP_SYS_ADMIN?)"

export PATH="$PATH:/usr/sbin:/sbin"
need=()
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v file >/dev/null 2>&1 || need+=(file)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> apt-get install ${need[*]}"
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need[@]}" >/dev/null
fi

tools=${LATCHKEY_LAMBDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/latchkey/lambda-tools}
mapfile -t requirements < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/requirements/lambda-tools.txt)
stamp="$tools/.latchkey-requirements"
if [ ! -x "$tools/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "==> installing the Lambda tools into $tools"
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || {
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  }
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$tools/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" >"$stamp"
fi
export PATH="$tools/bin:$PATH"

# The deploy binary, before the clock of any test starts (cargo lambda watch then only runs it).
echo "==> cargo build -p deploy"
cargo build --locked -q -p deploy --bins

echo "==> pytest tests/chain"
exec "$tools/bin/python" -m pytest -p no:cacheprovider -v -s tests/chain "$@"
