#!/usr/bin/env bash
# Prepares a back-end host for latchkey-deploy. Run it as root from a checkout (or a copy of this
# folder) on the host; run it again after changing /etc/latchkey/deploy.conf or to upgrade the
# script. It changes nothing it has already done and never overwrites your settings.
#
#   sudo api-container/deploy/install.sh
#   sudo api-container/deploy/install.sh --packages-only   steps 1 and 2 only (the front-end host:
#                                                          Docker, nginx, the AWS CLI)
#
# What it does:
#   1. installs Docker, nginx, curl, flock, pgrep and the AWS CLI when missing (apt-get on
#      Debian/Ubuntu, dnf on Amazon Linux 2023; on Ubuntu, whose archive has no AWS CLI, the
#      aws-cli snap or else AWS's installer), and starts Docker and nginx at boot;
#   2. on a host whose Docker has no /etc/docker/daemon.json yet, writes one that rotates
#      container logs and keeps containers running while the Docker daemon restarts;
#   3. installs latchkey-deploy as /usr/local/sbin/latchkey-deploy;
#   4. creates /etc/latchkey/deploy.conf and /etc/latchkey/api.env (mode 600) from the examples
#      when they do not exist;
#   5. runs `latchkey-deploy init`: the nginx site on LISTEN (default 8080) in front of the
#      blue/green slots, and the state folder; then starts or reloads nginx.
#
# For tests only (tests/infra/test_host_bootstrap.py, with stand-ins for apt-get, dnf, snap, curl,
# Docker, nginx and systemctl): LATCHKEY_ROOT=/a/folder writes every host path under that folder
# instead of / (deploy.conf's paths too) and lifts the root check; LATCHKEY_SBIN names the folder
# latchkey-deploy is run from.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

root=${LATCHKEY_ROOT:-}
sbin=${LATCHKEY_SBIN:-$root/usr/local/sbin}
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "run it as root (sudo $0)"
packages_only=false
case ${1:-} in
"") ;;
--packages-only) packages_only=true ;;
*) die "usage: install.sh [--packages-only]" ;;
esac

# 1. Packages.
need=()
command -v docker >/dev/null 2>&1 || need+=(docker)
command -v nginx >/dev/null 2>&1 || [ -x "$root/usr/sbin/nginx" ] || need+=(nginx)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v aws >/dev/null 2>&1 || need+=(aws)
if [ ${#need[@]} -gt 0 ]; then
  say "installing: ${need[*]}"
  if command -v apt-get >/dev/null 2>&1; then
    packages=()
    for want in "${need[@]}"; do
      case $want in
      docker) packages+=(docker.io) ;;
      # Debian has an awscli package; Ubuntu 24.04 and later have none (see below).
      aws) apt-cache show awscli >/dev/null 2>&1 && packages+=(awscli) ;;
      *) packages+=("$want") ;;
      esac
    done
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # Asked again after the update: before it, apt-cache may not know awscli yet.
    if [[ " ${need[*]} " == *" aws "* ]] && [[ " ${packages[*]} " != *" awscli "* ]] \
      && apt-cache show awscli >/dev/null 2>&1; then
      packages+=(awscli)
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${packages[@]}" >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    packages=()
    for want in "${need[@]}"; do
      case $want in
      aws) packages+=(awscli-2) ;;
      procps) packages+=(procps-ng) ;;
      curl) packages+=(curl-minimal) ;;
      *) packages+=("$want") ;;
      esac
    done
    dnf install -y -q "${packages[@]}"
  else
    die "no apt-get or dnf: install ${need[*]} yourself, then run this again"
  fi
fi
# Ubuntu (24.04 and later) packages no AWS CLI: the snap AWS publishes, else AWS's own installer
# (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html).
if ! command -v aws >/dev/null 2>&1 && command -v snap >/dev/null 2>&1; then
  say "installing the AWS CLI (snap aws-cli)"
  snap install aws-cli --classic >/dev/null || true
  hash -r
fi
if ! command -v aws >/dev/null 2>&1; then
  say "installing the AWS CLI v2 (AWS's installer)"
  if command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq unzip >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q unzip
  fi
  awscli_tmp=$(mktemp -d)
  curl -fsSL --retry 3 -o "$awscli_tmp/awscliv2.zip" "https://awscli.amazonaws.com/awscli-exe-linux-$(uname -m).zip"
  unzip -q "$awscli_tmp/awscliv2.zip" -d "$awscli_tmp"
  "$awscli_tmp/aws/install" --update >/dev/null
  rm -rf "$awscli_tmp"
  hash -r
fi
command -v aws >/dev/null 2>&1 || die "no AWS CLI, and it could not be installed: it is needed to pull from ECR"

# 2. Docker's own settings, only on a Docker that has none yet (so not behind anyone's back).
if [ ! -e "$root/etc/docker/daemon.json" ]; then
  mkdir -p "$root/etc/docker"
  # Rotated logs: a chatty container must not fill the disk. live-restore: upgrading or
  # restarting dockerd does not stop the serving container.
  cat >"$root/etc/docker/daemon.json" <<'JSON'
{
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "5"},
  "live-restore": true
}
JSON
  say "wrote /etc/docker/daemon.json (log rotation, live-restore)"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker; then
    systemctl restart docker
  fi
fi
if command -v systemctl >/dev/null 2>&1; then
  systemctl enable --now docker >/dev/null
fi
docker info >/dev/null 2>&1 || die "Docker does not answer (docker info failed)"
if $packages_only; then
  say "packages ready (--packages-only: no deploy script, settings or nginx site)"
  exit 0
fi

# 3. The script.
install -D -m 0755 "$here/latchkey-deploy" "$root/usr/local/sbin/latchkey-deploy"
say "installed /usr/local/sbin/latchkey-deploy"

# 4. Settings, never overwritten.
install -d -m 0700 "$root/etc/latchkey"
if [ ! -e "$root/etc/latchkey/deploy.conf" ]; then
  # (Under LATCHKEY_ROOT its absolute paths move there too.)
  sed "s|=/|=$root/|" "$here/deploy.conf.example" >"$root/etc/latchkey/deploy.conf"
  chmod 600 "$root/etc/latchkey/deploy.conf"
  say "wrote /etc/latchkey/deploy.conf (the defaults; edit it to change ports or paths)"
fi
if [ ! -e "$root/etc/latchkey/api.env" ]; then
  install -m 0600 "$here/api.env.example" "$root/etc/latchkey/api.env"
  say "wrote /etc/latchkey/api.env from the example: fill in DATABASE_URL, AUTH_KEY_ENCRYPTION_KEY and the rest before the first deploy"
fi

# 5. nginx in front of the slots.
LATCHKEY_DEPLOY_CONF="${LATCHKEY_DEPLOY_CONF:-$root/etc/latchkey/deploy.conf}" "$sbin/latchkey-deploy" init
if command -v systemctl >/dev/null 2>&1; then
  systemctl enable nginx >/dev/null
  systemctl is-active --quiet nginx || systemctl start nginx
fi
say "done. Deploy by digest: latchkey-deploy deploy <account>.dkr.ecr.<region>.amazonaws.com/<repository>@sha256:<digest>"
