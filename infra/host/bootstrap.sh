#!/usr/bin/env bash
# Sets up a Latchkey host from the host bundle (this folder's repository, unpacked in /opt/latchkey
# by the instance's user data, infra/environment.yaml). Nobody logs in to a host: the stack's user
# data runs this at first boot, and scripts/deploy-aws.sh runs it again through SSM to update a
# host (for the front-end: the site and its nginx settings; for a back-end: api.env, with the mail
# settings). Safe to run any number of times.
#
#   bootstrap.sh frontend --backends 10.0.2.10:8080[,10.0.3.10:8080] --region R \
#       --repository NAME --registry ACCOUNT.dkr.ecr.R.amazonaws.com
#   bootstrap.sh backend --region R --issuer https://dxxxx.cloudfront.net \
#       --trusted-proxies 127.0.0.1/32,10.0.0.0/16 --db-host H --db-port 5432 \
#       --db-secret ARN --key-secret ARN --repository NAME --registry ACCOUNT.dkr.ecr.R.amazonaws.com \
#       [--mail-secret ARN --mail-from 'Latchkey <no-reply@example.com>']
#   bootstrap.sh frontend|backend --saved [--option value ...]
#                                     the arguments of the last run again (the daily timer,
#                                     deploy-aws.sh), with these added or changed
#
# With --mail-secret (the stack's MailSmtpSecret: an SES sender's access key), api.env gets
# SMTP_URL, with the SES SMTP password derived from the key's secret (infra/host/ses_smtp.py),
# and MAIL_FROM.
#
# Supported: Amazon Linux 2023 (what the stack launches), Debian 12+ and Ubuntu 22.04+.
#
# For tests only (tests/infra/test_host_bootstrap.py runs this with stand-ins for the package
# managers, Docker, nginx, systemctl, curl and the AWS CLI): LATCHKEY_ROOT=/a/folder writes every
# host path under that folder instead of / (and lifts the root check), and LATCHKEY_SBIN names the
# folder the installed latchkey-deploy and latchkey-frontend-deploy are run from.
set -euo pipefail
umask 022

bundle=$(cd "$(dirname "$0")/../.." && pwd)
say() { echo "bootstrap.sh: $*"; }
die() { echo "bootstrap.sh: error: $*" >&2; exit 1; }

root=${LATCHKEY_ROOT:-}
sbin=${LATCHKEY_SBIN:-$root/usr/local/sbin}
export LATCHKEY_ROOT="$root" LATCHKEY_SBIN="$sbin"
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "run it as root"
[ $# -ge 1 ] || die "usage: bootstrap.sh frontend|backend --option value ..."
role=$1
shift

# The arguments are kept, so that the daily refresh and scripts/deploy-aws.sh run it again as the
# stack's user data did, without knowing them.
saved_args=$root/etc/latchkey/$role.bootstrap-args
# A host booted before the arguments were kept has only its user data: the last line of it that
# runs this script for this role holds them (continued lines joined, quoting as the shell reads it).
user_data=$root/var/lib/cloud/instance/user-data.txt
args_from_user_data() {
  python3 - "$role" "$user_data" <<'PY'
import re, shlex, sys
role, path = sys.argv[1], sys.argv[2]
script = re.sub(r"\\\n", " ", open(path, encoding="utf-8").read())
found = None
for line in script.splitlines():
    words = shlex.split(line, comments=True) if "bootstrap.sh" in line else []
    while words and words[0] in ("exec", "sudo"):
        words = words[1:]
    if len(words) >= 2 and words[0].endswith("/infra/host/bootstrap.sh") and words[1] == role:
        found = words[2:]
if found is None:
    sys.exit(1)
print("\n".join(found))
PY
}
if [ "${1:-}" = --saved ]; then
  if [ -f "$saved_args" ]; then
    mapfile -t args <"$saved_args"
  elif [ -f "$user_data" ] && saved_text=$(args_from_user_data) && [ -n "$saved_text" ]; then
    say "no $saved_args yet: taking the arguments from the host's user data"
    mapfile -t args <<<"$saved_text"
  else
    die "no $saved_args, and no '$role' run of bootstrap.sh in $user_data: run it once with the arguments"
  fi
  # Options after --saved are added (a later one wins), and kept for the next run.
  shift
  set -- "${args[@]}" "$@"
fi

backends="" region="" issuer="" trusted="" db_host="" db_port=5432 db_secret="" key_secret=""
repository="" registry="" mail_secret="" mail_from=""
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
  --mail-secret) mail_secret=$2 ;;
  --mail-from) mail_from=$2 ;;
  *) die "unknown option $1" ;;
  esac
  shift 2
done
# What --saved reads back next time: each option once, with its final value.
given=()
for name in backends region issuer trusted db_host db_port db_secret key_secret repository registry mail_secret mail_from; do
  [ -z "${!name}" ] && continue
  case $name in trusted) option=--trusted-proxies ;; *) option=--${name//_/-} ;; esac
  given+=("$option" "${!name}")
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
  install -d -m 0755 "$root/etc/latchkey"
  printf '%s\n' "${given[@]}" >"$saved_args"

  # The script that swaps the site (the front-end SSM document runs it on every front-end push).
  install -D -m 0755 "$bundle/frontend/deploy/latchkey-frontend-deploy" "$root/usr/local/sbin/latchkey-frontend-deploy"
  cat >"$root/etc/latchkey/frontend.conf" <<CONF
# Written by infra/host/bootstrap.sh (latchkey-frontend-deploy's settings).
BACKENDS=$backends
LISTEN=80
CONF

  # nginx's main file with nothing but the http context's basics: the distributions' own files
  # carry a default server on port 80 that would shadow the site.
  mkdir -p "$root/etc/nginx/conf.d"
  cat >"$root/etc/nginx/nginx.conf" <<'NGINX'
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
  if ! id nginx >/dev/null 2>&1; then sed -i 's/^user nginx;/user www-data;/' "$root/etc/nginx/nginx.conf"; fi
  rm -f "$root/etc/nginx/sites-enabled/default" "$root/etc/nginx/conf.d/default.conf"

  # The client's address behind CloudFront: believe X-Forwarded-For only from CloudFront's
  # origin-facing addresses (AWS publishes them), so that nginx's rate limit and the
  # X-Forwarded-For it passes on name the client; a request straight to port 80 cannot claim one.
  local ranges=$root/etc/nginx/conf.d/00-cloudfront-realip.conf ip_ranges
  ip_ranges=$(mktemp)
  if curl -fsS --max-time 30 https://ip-ranges.amazonaws.com/ip-ranges.json -o "$ip_ranges" \
    && python3 "$bundle/infra/host/cloudfront_realip.py" "$ip_ranges" >"$ranges.new"; then
    mv "$ranges.new" "$ranges"
  else
    rm -f "$ranges.new"
    say "warning: could not fetch CloudFront's address ranges; keeping $ranges as it is"
  fi
  rm -f "$ip_ranges"

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
    "$sbin/latchkey-frontend-deploy" deploy "$registry/$repository@$digest"
  else
    say "no image in $repository yet: serving the bundle's site until the first push"
    "$sbin/latchkey-frontend-deploy" site "$bundle/frontend"
  fi

  # CloudFront's ranges change now and then: refresh them daily (this script, same arguments).
  # A systemd timer, not cron: Amazon Linux 2023 has no cron daemon unless one is installed.
  mkdir -p "$root/etc/systemd/system"
  cat >"$root/etc/systemd/system/latchkey-frontend-refresh.service" <<UNIT
# Written by infra/host/bootstrap.sh: CloudFront's address ranges and nginx's settings, again.
[Unit]
Description=Latchkey front-end: refresh CloudFront's address ranges
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=$bundle/infra/host/bootstrap.sh frontend --saved
UNIT
  cat >"$root/etc/systemd/system/latchkey-frontend-refresh.timer" <<UNIT
# Written by infra/host/bootstrap.sh.
[Unit]
Description=Latchkey front-end: refresh CloudFront's address ranges daily

[Timer]
OnCalendar=*-*-* 04:17:00
RandomizedDelaySec=30m
Persistent=true

[Install]
WantedBy=timers.target
UNIT
  rm -f "$root/etc/cron.d/latchkey-frontend"
  systemctl daemon-reload
  systemctl enable --now latchkey-frontend-refresh.timer >/dev/null 2>&1 || say "warning: could not enable the daily refresh timer"
  say "front-end ready: the site on :80, /api proxied to $backends"
}

# ---------------------------------------------------------------------------------------------
backend() {
  local missing=() name
  for name in region issuer trusted db_host db_secret key_secret repository registry; do
    [ -n "${!name}" ] || missing+=("--${name//_/-}")
  done
  [ ${#missing[@]} -eq 0 ] || die "backend needs ${missing[*]}"
  if [ -n "$mail_secret" ] || [ -n "$mail_from" ]; then
    if [ -z "$mail_secret" ] || [ -z "$mail_from" ]; then die "--mail-secret and --mail-from go together"; fi
    [[ $mail_from =~ ^[^$'\n']*@[^$'\n']*$ ]] || die "--mail-from '$mail_from' is not one line with an address"
  fi
  # Docker, nginx, the AWS CLI (on every supported distribution), latchkey-deploy and the
  # nginx site in front of the blue/green slots; it leaves an api.env of its own, rewritten below.
  "$bundle/api-container/deploy/install.sh"
  install_packages python3:python3:python3 openssl:openssl:openssl

  # The service's environment, from the stack and Secrets Manager. Only `docker run --env-file`
  # reads it (mode 600, root).
  install -d -m 0700 "$root/etc/latchkey"
  printf '%s\n' "${given[@]}" >"$saved_args"
  chmod 600 "$saved_args"
  local db_json key_seed mail_json=""
  db_json=$(aws secretsmanager get-secret-value --secret-id "$db_secret" --query SecretString --output text)
  key_seed=$(aws secretsmanager get-secret-value --secret-id "$key_secret" --query SecretString --output text)
  if [ -n "$mail_secret" ]; then
    mail_json=$(aws secretsmanager get-secret-value --secret-id "$mail_secret" --query SecretString --output text)
  fi
  (
    umask 077
    python3 - "$db_json" "$db_host" "$db_port" >"$root/etc/latchkey/api.env.new" <<'PY'
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
    # Mail through SES's SMTP interface (the stack's MailDomain): the SMTP password is derived
    # from the sender's secret key here, on the host (deploy-aws.sh does the same for the auth Lambda).
    if [ -n "$mail_json" ]; then
      printf '%s' "$mail_json" | python3 "$bundle/infra/host/ses_smtp.py" "$region"
      printf 'MAIL_FROM=%s\n' "$mail_from"
    fi
  ) >>"$root/etc/latchkey/api.env.new"
  chmod 600 "$root/etc/latchkey/api.env.new"
  mv "$root/etc/latchkey/api.env.new" "$root/etc/latchkey/api.env"

  # RDS's CA bundle for sslmode=verify-full, carried in the host bundle (deploy-aws.sh fetches
  # it), so that a host without internet access (PrivateEgress=endpoints) has it too.
  [ -s "$bundle/rds-ca.pem" ] || die "the host bundle has no rds-ca.pem"
  install -D -m 0644 "$bundle/rds-ca.pem" "$root/usr/local/share/latchkey/rds-ca.pem"
  sed -i "s|^DB_CA_FILE=.*|DB_CA_FILE=$root/usr/local/share/latchkey/rds-ca.pem|" "$root/etc/latchkey/deploy.conf"

  # Start the newest image, if the pipeline pushed one already; later pushes arrive through
  # EventBridge -> deploy Lambda -> SSM.
  local digest
  digest=$(aws ecr describe-images --repository-name "$repository" \
    --query 'sort_by(imageDetails, &imagePushedAt)[-1].imageDigest' --output text 2>/dev/null || true)
  if [[ $digest == sha256:* ]]; then
    say "starting the newest image, $registry/$repository@$digest"
    "$sbin/latchkey-deploy" deploy "$registry/$repository@$digest"
  else
    say "no image in $repository yet: the first push deploys through EventBridge and the deploy Lambda"
  fi
}

case $role in
frontend) frontend ;;
backend) backend ;;
*) die "unknown role $role (frontend or backend)" ;;
esac
