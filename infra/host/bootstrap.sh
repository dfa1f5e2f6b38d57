#!/usr/bin/env bash
# Sets up a Latchkey host from the host bundle (this folder's repository, unpacked in /opt/latchkey
# by the instance's user data, infra/environment.yaml). Nobody logs in to a host: the stack's user
# data runs this at first boot, and scripts/deploy-aws.sh runs it again through SSM to update a
# host (for the front-end: the site and its nginx settings). Safe to run any number of times.
#
#   bootstrap.sh frontend --backends 10.0.2.10:8080[,10.0.3.10:8080] --region R \
#       --repository NAME --registry ACCOUNT.dkr.ecr.R.amazonaws.com
#   bootstrap.sh frontend --saved     the arguments of the last run again (cron, deploy-aws.sh)
#   bootstrap.sh backend --region R --issuer https://dxxxx.cloudfront.net \
#       --trusted-proxies 127.0.0.1/32,10.0.0.0/16 --db-host H --db-port 5432 \
#       --db-secret ARN --key-secret ARN --repository NAME --registry ACCOUNT.dkr.ecr.R.amazonaws.com
#
# Supported: Amazon Linux 2023 (what the stack launches), Debian 12+ and Ubuntu 22.04+.
set -euo pipefail
umask 022

bundle=$(cd "$(dirname "$0")/../.." && pwd)
say() { echo "bootstrap.sh: $*"; }
die() { echo "bootstrap.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run it as root"
[ $# -ge 1 ] || die "usage: bootstrap.sh frontend|backend --option value ..."
role=$1
shift

# The front-end's arguments are kept, so that the daily refresh and scripts/deploy-aws.sh run it
# again as the stack's user data did, without knowing them.
saved_args=/etc/latchkey/$role.bootstrap-args
if [ "${1:-}" = --saved ]; then
  [ -f "$saved_args" ] || die "no $saved_args: run it once with the arguments"
  mapfile -t args <"$saved_args"
  set -- "${args[@]}"
fi
given=("$@")

backends="" region="" issuer="" trusted="" db_host="" db_port=5432 db_secret="" key_secret=""
repository="" registry=""
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case $1 in
  --backends) backends=$2 ;;
  --region) region=$2 ;;
  --issuer) issuer=$2 ;;
  --trusted-proxies) trusted=$2 ;;
  --db-host) db_host=$2 ;;
  --db-port) db_port=$2 ;;
  --db-secret) db_secret=$2 ;;
  --key-secret) key_secret=$2 ;;
  --repository) repository=$2 ;;
  --registry) registry=$2 ;;
  *) die "unknown option $1" ;;
  esac
  shift 2
done
export AWS_DEFAULT_REGION=${region:-${AWS_DEFAULT_REGION:-}}

install_packages() { # command:package-on-apt:package-on-dnf ...
  local want apt=() dnf=()
  for want in "$@"; do
    IFS=: read -r cmd on_apt on_dnf <<<"$want"
    command -v "$cmd" >/dev/null 2>&1 && continue
    apt+=("$on_apt")
    dnf+=("$on_dnf")
  done
  [ ${#apt[@]} -gt 0 ] || return 0
  say "installing ${apt[*]}"
  if command -v dnf >/dev/null 2>&1; then
    dnf install -y -q "${dnf[@]}"
  elif command -v apt-get >/dev/null 2>&1; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${apt[@]}" >/dev/null
  else
    die "no dnf or apt-get: install ${apt[*]} yourself"
  fi
}

# ---------------------------------------------------------------------------------------------
frontend() {
  [[ $backends =~ ^[0-9.]+:[0-9]+(,[0-9.]+:[0-9]+)*$ ]] || die "frontend needs --backends ADDRESS:PORT[,ADDRESS:PORT]"
  local missing=() name
  for name in region repository registry; do
    [ -n "${!name}" ] || missing+=("--$name")
  done
  [ ${#missing[@]} -eq 0 ] || die "frontend needs ${missing[*]}"
  [[ $repository =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "--repository $repository is not a repository name"
  [[ $registry =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$ ]] || die "--registry $registry is not a registry host"
  # Docker (to pull the front-end image), nginx, curl, flock, pgrep and the AWS CLI (the ECR
  # login), as the back-end's install.sh installs them on every supported distribution.
  "$bundle/api-container/deploy/install.sh" --packages-only
  install_packages python3:python3:python3
  install -d -m 0755 /etc/latchkey
  printf '%s\n' "${given[@]}" >"$saved_args"

  # The script that swaps the site (the front-end SSM document runs it on every front-end push).
  install -m 0755 "$bundle/frontend/deploy/latchkey-frontend-deploy" /usr/local/sbin/latchkey-frontend-deploy
  cat >/etc/latchkey/frontend.conf <<CONF
# Written by infra/host/bootstrap.sh (latchkey-frontend-deploy's settings).
BACKENDS=$backends
LISTEN=80
CONF

  # nginx's main file with nothing but the http context's basics: the distributions' own files
  # carry a default server on port 80 that would shadow the site.
  cat >/etc/nginx/nginx.conf <<'NGINX'
# Written by infra/host/bootstrap.sh: the site is /etc/nginx/conf.d/latchkey.conf.
user nginx;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log warn;
events { worker_connections 4096; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log combined;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
NGINX
  if ! id nginx >/dev/null 2>&1; then sed -i 's/^user nginx;/user www-data;/' /etc/nginx/nginx.conf; fi
  rm -f /etc/nginx/sites-enabled/default /etc/nginx/conf.d/default.conf
  mkdir -p /etc/nginx/conf.d

  # The client's address behind CloudFront: believe X-Forwarded-For only from CloudFront's
  # origin-facing addresses (AWS publishes them), so that nginx's rate limit and the
  # X-Forwarded-For it passes on name the client; a request straight to port 80 cannot claim one.
  local ranges=/etc/nginx/conf.d/00-cloudfront-realip.conf
  if curl -fsS --max-time 30 https://ip-ranges.amazonaws.com/ip-ranges.json -o /tmp/ip-ranges.json; then
    python3 - /tmp/ip-ranges.json >"$ranges.new" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
prefixes = sorted({p["ip_prefix"] for p in data["prefixes"] if p["service"] == "CLOUDFRONT_ORIGIN_FACING"})
prefixes += sorted({p["ipv6_prefix"] for p in data.get("ipv6_prefixes", []) if p["service"] == "CLOUDFRONT_ORIGIN_FACING"})
assert prefixes, "no CLOUDFRONT_ORIGIN_FACING prefix in ip-ranges.json"
print("# Written by infra/host/bootstrap.sh from ip-ranges.json (CLOUDFRONT_ORIGIN_FACING).")
for prefix in prefixes:
    print(f"set_real_ip_from {prefix};")
print("real_ip_header X-Forwarded-For;")
print("real_ip_recursive on;")
PY
    mv "$ranges.new" "$ranges"
  else
    say "warning: could not fetch CloudFront's address ranges; keeping $ranges as it is"
  fi

  nginx -t
  systemctl enable nginx >/dev/null 2>&1 || true
  if systemctl is-active --quiet nginx; then systemctl reload nginx; else systemctl start nginx; fi

  # The site: the newest front-end image, if the pipeline pushed one already (later pushes arrive
  # through EventBridge -> deploy Lambda -> SSM), else the bundle's copy of frontend/.
  local digest
  digest=$(aws ecr describe-images --repository-name "$repository" \
    --query 'sort_by(imageDetails, &imagePushedAt)[-1].imageDigest' --output text 2>/dev/null || true)
  if [[ $digest == sha256:* ]]; then
    say "serving the newest front-end image, $registry/$repository@$digest"
    /usr/local/sbin/latchkey-frontend-deploy deploy "$registry/$repository@$digest"
  else
    say "no image in $repository yet: serving the bundle's site until the first push"
    /usr/local/sbin/latchkey-frontend-deploy site "$bundle/frontend"
  fi

  # CloudFront's ranges change now and then: refresh them daily (this script, same arguments).
  cat >/etc/cron.d/latchkey-frontend 2>/dev/null <<CRON || true
17 4 * * * root $bundle/infra/host/bootstrap.sh frontend --saved >>/var/log/latchkey-bootstrap.log 2>&1
CRON
  say "front-end ready: the site on :80, /api proxied to $backends"
}

# ---------------------------------------------------------------------------------------------
backend() {
  local missing=() name
  for name in region issuer trusted db_host db_secret key_secret repository registry; do
    [ -n "${!name}" ] || missing+=("--${name//_/-}")
  done
  [ ${#missing[@]} -eq 0 ] || die "backend needs ${missing[*]}"
  # Docker, nginx, the AWS CLI (on every supported distribution), latchkey-deploy and the
  # nginx site in front of the blue/green slots; it leaves an api.env of its own, rewritten below.
  "$bundle/api-container/deploy/install.sh"
  install_packages python3:python3:python3 openssl:openssl:openssl

  # The service's environment, from the stack and Secrets Manager. Only `docker run --env-file`
  # reads it (mode 600, root).
  install -d -m 0700 /etc/latchkey
  local db_json key_seed
  db_json=$(aws secretsmanager get-secret-value --secret-id "$db_secret" --query SecretString --output text)
  key_seed=$(aws secretsmanager get-secret-value --secret-id "$key_secret" --query SecretString --output text)
  (
    umask 077
    python3 - "$db_json" "$db_host" "$db_port" >/etc/latchkey/api.env.new <<'PY'
import json, sys
from urllib.parse import quote
secret = json.loads(sys.argv[1])
user, password = quote(secret["username"], safe=""), quote(secret["password"], safe="")
print(f"DATABASE_URL=postgres://{user}:{password}@{sys.argv[2]}:{sys.argv[3]}/latchkey?sslmode=verify-full")
PY
    printf 'AUTH_KEY_ENCRYPTION_KEY=%s\n' "$(printf '%s' "$key_seed" | openssl dgst -sha256 -binary | openssl base64 -A)"
    cat <<EOF
# Written by infra/host/bootstrap.sh from the stack (infra/environment.yaml).
AUTH_ISSUER=$issuer
AUTH_AUDIENCE=latchkey
AUTH_COOKIE_SECURE=true
AUTH_TRUSTED_PROXIES=$trusted
LOG_FORMAT=json
RUST_LOG=info
EOF
  ) >>/etc/latchkey/api.env.new
  chmod 600 /etc/latchkey/api.env.new
  mv /etc/latchkey/api.env.new /etc/latchkey/api.env

  # RDS's CA bundle for sslmode=verify-full, carried in the host bundle (deploy-aws.sh fetches
  # it), so that a host without internet access (PrivateEgress=endpoints) has it too.
  [ -s "$bundle/rds-ca.pem" ] || die "the host bundle has no rds-ca.pem"
  install -D -m 0644 "$bundle/rds-ca.pem" /usr/local/share/latchkey/rds-ca.pem

  sed -i 's|^DB_CA_FILE=.*|DB_CA_FILE=/usr/local/share/latchkey/rds-ca.pem|' /etc/latchkey/deploy.conf

  # Start the newest image, if the pipeline pushed one already; later pushes arrive through
  # EventBridge -> deploy Lambda -> SSM.
  local digest
  digest=$(aws ecr describe-images --repository-name "$repository" \
    --query 'sort_by(imageDetails, &imagePushedAt)[-1].imageDigest' --output text 2>/dev/null || true)
  if [[ $digest == sha256:* ]]; then
    say "starting the newest image, $registry/$repository@$digest"
    /usr/local/sbin/latchkey-deploy deploy "$registry/$repository@$digest"
  else
    say "no image in $repository yet: the first push deploys through EventBridge and the deploy Lambda"
  fi
}

case $role in
frontend) frontend ;;
backend) backend ;;
*) die "unknown role $role (frontend or backend)" ;;
esac
