#!/usr/bin/env bash
# `make test-infra`: the AWS environment (infra/environment.yaml) and the SAM template, offline.
#   1. cfn-lint and `sam validate --lint` on every template (infra/*.yaml and template.yaml)
#   2. checkov on infra/: no failed check (each skip is written in the template with its reason)
#   3. pytest tests/infra: the environment stack created on moto's server (CloudFormation
#      CreateStack), its topology read back with boto3; what moto lacks is read from the template;
#      infra/host/bootstrap.sh and install.sh run on stand-in hosts (test_host_bootstrap.py)
# The pinned tools (scripts/requirements/*.txt) live in two virtualenvs of their own, installed
# when missing or different: lambda-tools (the SAM CLI, cfn-lint, moto, pytest; shared with
# scripts/test-lambda.sh) and infra-scan (checkov, whose pins clash with the SAM CLI's).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-infra.sh: $*" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/latchkey

# venv FOLDER REQUIREMENTS-FILE: the virtualenv, with exactly the file's packages at their pins.
# The stamp is the list itself, as scripts/test-lambda.sh writes it, so both agree on one venv.
venv() {
  local dir=$1 file=$2 wanted
  wanted=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$file" | tr '\n' ' ' | sed 's/ $//')
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.latchkey-requirements" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  echo "==> installing $file into $dir"
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 \
    || die "python3 cannot make a virtualenv: install python3-venv"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # shellcheck disable=SC2086 # one package a word
  "$dir/bin/python" -m pip install -q --disable-pip-version-check $wanted
  echo "$wanted" >"$dir/.latchkey-requirements"
}

lambda_tools=${LATCHKEY_LAMBDA_TOOLS:-$cache/lambda-tools}
infra_scan=${LATCHKEY_INFRA_SCAN:-$cache/infra-scan}
venv "$lambda_tools" scripts/requirements/lambda-tools.txt
venv "$infra_scan" scripts/requirements/infra-scan.txt
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

templates=(infra/*.yaml template.yaml)
echo "==> cfn-lint ${templates[*]}"
"$lambda_tools/bin/cfn-lint" "${templates[@]}"
for template in "${templates[@]}"; do
  echo "==> sam validate --lint --template $template"
  "$lambda_tools/bin/sam" validate --lint --template "$template"
done
echo "==> checkov infra/ (offline)"
# --skip-download: no call home for guidelines; the checks ship inside the package.
"$infra_scan/bin/checkov" -d infra --framework cloudformation --quiet --compact --skip-download
echo "==> shellcheck infra/host"
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck infra/host/*.sh api-container/deploy/install.sh scripts/deploy-aws.sh scripts/test-infra.sh \
    scripts/test-chain.sh frontend/deploy/latchkey-frontend-deploy frontend/build-image.sh
else
  echo "shellcheck is not installed: skipping (apt-get install shellcheck)"
fi
echo "==> the environment on moto's server, the host scripts on stand-in hosts (pytest tests/infra)"
"$lambda_tools/bin/python" -m pytest -c tests/infra/pytest.ini tests/infra
