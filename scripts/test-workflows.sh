#!/usr/bin/env bash
# `make test-workflows`: the GitHub Actions workflows in .github/workflows/, offline.
#   1. every workflow against GitHub's workflow schema, and every job has a timeout
#      (check-jsonschema's built-in schemas, shipped inside the package: nothing is downloaded)
#   2. the pipeline's shape (pytest tests/workflows/): triggers per branch, promotion only after
#      the checks, the release after it, per-job permissions, OIDC and ECR, pins, caching, and
#      that every make target and script a workflow calls exists; shellcheck on every run block
#   3. zizmor --offline: no finding above "low"; each one silenced in a workflow says why inline
#      (`# zizmor: ignore[audit] reason`), and every action is pinned to a commit sha
#   4. hadolint on every Dockerfile the repository tracks (each ignored rule says why inline)
# The pinned tools (tests/workflows/requirements.txt) are installed with pip when one is missing
# or at another version: into the active virtualenv, as root into the Python itself, else --user.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/workflows/requirements.txt

# Exit 0 when every pinned package is installed at its pinned version.
pinned_present() {
  python3 - "$requirements" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pinned = line.split("==")
    try:
        installed = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if installed != pinned:
        sys.exit(1)
PY
}

if ! pinned_present; then
  echo "==> installing $requirements (pip)"
  flags=(--quiet --disable-pip-version-check)
  in_venv=$(python3 -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
  if [ "$in_venv" = 0 ] && [ "$(id -u)" -ne 0 ]; then
    flags+=(--user)
  fi
  python3 -m pip install "${flags[@]}" -r "$requirements"
  pinned_present || { echo "test-workflows: $requirements is still not satisfied after pip install" >&2; exit 1; }
fi

shopt -s nullglob
workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -eq 0 ]; then
  echo "test-workflows: no workflow in .github/workflows/" >&2
  exit 1
fi

echo "==> check-jsonschema: ${#workflows[@]} workflows against GitHub's workflow schema"
python3 -m check_jsonschema --builtin-schema vendor.github-workflows "${workflows[@]}"
echo "==> check-jsonschema: every job has a timeout"
python3 -m check_jsonschema --builtin-schema custom.github-workflows-require-timeout "${workflows[@]}"

echo "==> the pipeline's shape (pytest tests/workflows)"
python3 -m pytest -c tests/workflows/pytest.ini tests/workflows

# pip puts a tool's binary beside the Python's scripts, or the user's with --user.
tool() {
  local found
  found=$(command -v "$1" || python3 - "$1" <<'PY'
import os, sys, sysconfig
for scheme in (None, f"{os.name}_user"):
    path = os.path.join(sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts"), sys.argv[1])
    if os.access(path, os.X_OK):
        print(path)
        break
PY
)
  [ -n "$found" ] || { echo "test-workflows: $1 is installed but its binary is not found" >&2; exit 1; }
  echo "$found"
}

zizmor=$(tool zizmor)
echo "==> zizmor --offline: no finding above low ($("$zizmor" --version))"
"$zizmor" --offline --no-progress --min-severity medium .github/workflows

hadolint=$(tool hadolint)
mapfile -t dockerfiles < <(git ls-files '*Dockerfile*')
echo "==> hadolint: ${dockerfiles[*]}"
"$hadolint" "${dockerfiles[@]}"
