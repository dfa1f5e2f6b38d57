#!/usr/bin/env bash
# The serverless half, offline: cfn-lint and `sam validate --lint` on template.yaml, `sam build`
# (both bootstraps for arm64, with cargo-lambda and zig: no Docker), then each function run for
# real through the Lambda runtime API by `cargo lambda watch` + `cargo lambda invoke` with the
# sample events: the auth Lambda against PostgreSQL, the deploy Lambda against moto.
#
# Uses DATABASE_URL (an admin URL; scripts/test.sh sets one) or else starts a throwaway cluster;
# needs psql. The Python tools live
# in a virtualenv of their own, LATCHKEY_LAMBDA_TOOLS (default ~/.cache/latchkey/lambda-tools),
# installed at pinned versions when missing or different: the SAM CLI pins click and botocore
# versions that other tools on the machine need otherwise, so they must not share a site-packages.
# The Rust tests of the Lambdas (cargo nextest) find moto in the same place.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-lambda.sh: $*" >&2; exit 1; }

command -v psql >/dev/null 2>&1 || die "psql is needed (apt-get install postgresql-client)"

tools=${LATCHKEY_LAMBDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/latchkey/lambda-tools}
# The pins live in scripts/requirements/lambda-tools.txt (scripts/test-infra.sh uses the same venv).
mapfile -t requirements < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/requirements/lambda-tools.txt)
stamp="$tools/.latchkey-requirements"
if [ ! -x "$tools/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "==> installing the Lambda tools into $tools"
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian's python3 splits venv out.
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    { command -v apt-get >/dev/null 2>&1 && "${sudo[@]}" apt-get update -qq \
      && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } \
      || die "python3 cannot make a virtualenv: install python3-venv (or your system's equivalent)"
  fi
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$tools/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}"
  echo "${requirements[*]}" >"$stamp"
fi
export PATH="$tools/bin:$PATH" SAM_CLI_TELEMETRY=0 LATCHKEY_MOTO_PYTHON="$tools/bin/python"
# sam validate and build need a region to resolve pseudo parameters; nothing is called.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "==> rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi

echo "==> cfn-lint template.yaml"
cfn-lint template.yaml
echo "==> sam validate --lint"
sam validate --lint
echo "==> sam build (arm64, cargo-lambda + zig)"
sam build
for function in DeployFunction AuthFunction; do
  # e_machine 183 is EM_AARCH64.
  python3 - ".aws-sam/build/$function/bootstrap" <<'PY' || die "$function's bootstrap is not an arm64 executable"
import struct, sys
with open(sys.argv[1], "rb") as f:
    head = f.read(20)
assert head[:4] == b"\x7fELF" and struct.unpack("<H", head[18:20])[0] == 183, head
PY
  echo "$function: .aws-sam/build/$function/bootstrap is an arm64 ELF executable"
done

# ---------------------------------------------------------------------------------------------
# Each function through the Lambda runtime API, as Lambda runs it.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-lambda.XXXXXX")
cluster=""
db="latchkey_lambda_watch_$$"
groups=()
moto_pid=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local group
  for group in "${groups[@]}"; do kill -TERM -- "-$group" 2>/dev/null || true; done
  [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${admin:-}" ]; then
    psql -X -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  fi
  [ -z "$cluster" ] || scripts/pg.sh stop "$cluster" || true
  if [ "${KEEP_LAMBDA_LOGS:-}" = 1 ]; then cp -r "$work" /tmp/latchkey-lambda-logs; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Without DATABASE_URL (`make test-lambda` on its own), a throwaway cluster of our own.
if [ -z "${DATABASE_URL:-}" ]; then
  cluster="$work/pg"
  mkdir -p "$cluster"
  chmod 755 "$work" "$cluster"
  port=$(free_port)
  echo "==> starting a throwaway PostgreSQL on 127.0.0.1:$port"
  scripts/pg.sh start "$cluster" "$port" --throwaway
  DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
fi
admin=${DATABASE_URL%%\?*}

# Starts `cargo lambda watch` for one binary in a process group of its own (so that cleanup
# stops the function it spawns as well) and waits for its runtime API to listen.
watch() { # binary port env-file
  setsid cargo lambda watch --package "$1" --bin "$1" --invoke-address 127.0.0.1 --invoke-port "$2" \
    --ignore-changes --env-file "$3" >"$work/$1.watch.log" 2>&1 &
  groups+=("$!")
  local _
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  cat "$work/$1.watch.log" >&2
  die "cargo lambda watch for $1 did not listen on 127.0.0.1:$2"
}

invoke() { # binary port data-file -> the function's JSON answer on stdout
  cargo lambda invoke "$1" --invoke-address 127.0.0.1 --invoke-port "$2" --data-file "$3" --output-format json
}

# The same binaries the tests built: the first invocation then only starts them.
cargo build --locked -q -p auth-lambda -p deploy --bins

echo "==> auth Lambda: cargo lambda watch + invoke with events/auth-*.json against PostgreSQL"
psql -X -q "$admin" -c "CREATE DATABASE $db"
cat >"$work/auth.env" <<EOF
DATABASE_URL="${admin%/*}/$db?sslmode=disable"
AUTH_PBKDF2_ITERATIONS=1000
LOG_FORMAT=json
RUST_LOG=info
EOF
auth_port=$(free_port)
watch auth-lambda "$auth_port" "$work/auth.env"
invoke auth-lambda "$auth_port" events/auth-register.json >"$work/register.json"
invoke auth-lambda "$auth_port" events/auth-login-function-url.json >"$work/login.json"
python3 - "$work/login.json" events/auth-me.json >"$work/me-event.json" <<'PY'
import json, sys
token = json.loads(json.load(open(sys.argv[1]))["body"])["access_token"]
event = json.load(open(sys.argv[2]))
event["headers"]["authorization"] = "Bearer " + token
json.dump(event, sys.stdout)
PY
invoke auth-lambda "$auth_port" "$work/me-event.json" >"$work/me.json"
invoke auth-lambda "$auth_port" events/auth-bad-body.json >"$work/bad-body.json"
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def answer(name):
    reply = json.load(open(os.path.join(work, name)))
    return reply, json.loads(reply.get("body") or "null")

def cookie_parts(cookie):
    # The pair first, then the attributes in any order (RFC 6265 gives their order no meaning).
    pair, *attributes = [part.strip() for part in cookie.split(";")]
    return pair, sorted(attributes)

def expect(condition, what, reply):
    if not condition:
        sys.exit(f"auth Lambda: expected {what}, got {json.dumps(reply)}")

for name, status in [("register.json", 201), ("login.json", 200)]:
    reply, body = answer(name)
    expect(reply["statusCode"] == status, f"{status} from {name}", reply)
    expect(body["token_type"] == "Bearer" and body["user"]["email"] == "ann@example.com", "a token response", reply)
    cookie = f"refresh_token={body['refresh_token']}; HttpOnly; SameSite=Strict; Path=/api/v1/auth; Max-Age={body['refresh_expires_in']}; Secure"
    cookies = reply.get("cookies") or []
    expect(len(cookies) == 1 and cookie_parts(cookies[0]) == cookie_parts(cookie),
           f"the refresh cookie in cookies: {cookie}", reply)
    expect(reply["headers"].get("cache-control") == "no-store", "Cache-Control: no-store", reply)
    print(f"{name}: {status}, refresh cookie set as in the contract")
reply, body = answer("me.json")
expect(reply["statusCode"] == 200 and body["email"] == "ann@example.com", "200 from /api/v1/me", reply)
print("me.json: 200", body["email"])
reply, body = answer("bad-body.json")
expect(reply["statusCode"] == 400 and body["code"] == "invalid_request", "400 invalid_request", reply)
expect(reply["headers"].get("content-type") == "application/problem+json", "problem+json", reply)
print("bad-body.json: 400 invalid_request (application/problem+json)")
PY

echo "==> deploy Lambda: cargo lambda watch + invoke with events/ecr-*.json against moto"
mkfifo "$work/moto.in"
# The read-write open does not block; this shell holds the fifo open, and moto exits when it
# reads end of file: at the latest when this script ends, however it ends.
# shellcheck disable=SC2034 # held open, never used
exec {moto_in}<>"$work/moto.in"
"$LATCHKEY_MOTO_PYTHON" functions/deploy/tests/moto_server.py --seed \
  '{"repository": "latchkey-api", "tag": "v1.4.2", "tag_key": "latchkey-role", "tag_value": "api", "instances": 2, "untagged": 1}' \
  <"$work/moto.in" >"$work/moto.json" 2>"$work/moto.log" &
moto_pid=$!
for _ in $(seq 1 150); do
  [ -s "$work/moto.json" ] && break
  kill -0 "$moto_pid" 2>/dev/null || { cat "$work/moto.log" >&2; die "moto did not start"; }
  sleep 0.2
done
[ -s "$work/moto.json" ] || die "moto did not start within 30 s"
read -r endpoint digest < <(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["endpoint"], m["digest"])' "$work/moto.json")
cat >"$work/deploy.env" <<EOF
AWS_ENDPOINT_URL="$endpoint"
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
DEPLOY_REPOSITORY=latchkey-api
DEPLOY_REGISTRY=123456789012.dkr.ecr.us-east-1.amazonaws.com
DEPLOY_TAG_PATTERN=v*
DEPLOY_TARGET_TAG_KEY=latchkey-role
DEPLOY_TARGET_TAG_VALUE=api
DEPLOY_DOCUMENT=latchkey-deploy
DEPLOY_WAIT_TIMEOUT_SECS=60
LOG_FORMAT=json
EOF
python3 - "$digest" events/ecr-push.json >"$work/push-event.json" <<'PY'
import json, sys
event = json.load(open(sys.argv[2]))
event["detail"]["image-digest"] = sys.argv[1]
json.dump(event, sys.stdout)
PY
deploy_port=$(free_port)
watch deploy "$deploy_port" "$work/deploy.env"
invoke deploy "$deploy_port" "$work/push-event.json" >"$work/deployed.json"
if invoke deploy "$deploy_port" events/ecr-delete.json >"$work/refused.json" 2>&1; then
  die "the deploy Lambda accepted events/ecr-delete.json: $(cat "$work/refused.json")"
fi
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
moto = json.load(open(os.path.join(work, "moto.json")))
reply = json.load(open(os.path.join(work, "deployed.json")))
image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/latchkey-api@{moto['digest']}"
problems = []
if reply.get("image") != image:
    problems.append(f"image {reply.get('image')!r}, expected {image!r}")
if not reply.get("command_id"):
    problems.append("no command_id")
instances = sorted(i["id"] for i in reply.get("instances", []))
if instances != sorted(moto["instances"]):
    problems.append(f"instances {instances}, expected the tagged {sorted(moto['instances'])}")
if any(i["status"] != "Success" for i in reply.get("instances", [])):
    problems.append("an instance did not report Success")
if problems:
    sys.exit("deploy Lambda: " + "; ".join(problems) + ": " + json.dumps(reply))
print(f"ecr-push.json: {reply['image']} on {', '.join(instances)} (command {reply['command_id']})")
refused = open(os.path.join(work, "refused.json")).read()
if "Deploy.Refused" not in refused or "DELETE" not in refused:
    sys.exit("deploy Lambda: expected ecr-delete.json to be refused with Deploy.Refused, got: " + refused)
print("ecr-delete.json: refused (Deploy.Refused), nothing sent")
PY
echo "==> the Lambdas: all checks passed"
