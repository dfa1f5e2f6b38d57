#!/usr/bin/env bash
# `make frontend-image`: the front-end image (frontend/site.Dockerfile), FROM scratch, holding
# frontend/public as /site and frontend/nginx.conf as /nginx.conf.template, plus /site/version.txt
# (the version, so that `curl https://SITE/version.txt` says what the front-end host serves).
#
#   IMAGE    name:tag to build (default latchkey-frontend:dev)
#   VERSION  the version written to version.txt and the label (default: `git describe`)
#   SITE     the folder to build from (default: frontend/; tests build altered copies)
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "frontend/build-image.sh: $*" >&2; exit 1; }
command -v docker >/dev/null 2>&1 || die "docker is not installed"

image=${IMAGE:-latchkey-frontend:dev}
site=${SITE:-frontend}
if [ ! -d "$site/public" ] || [ ! -f "$site/nginx.conf" ]; then die "$site has no public/ and nginx.conf"; fi
version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
[[ $version =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "VERSION must be 1 to 64 of A-Za-z0-9._- (it is served as version.txt)"

# The context holds the site and the settings alone.
context=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-frontend-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp -r "$site/public" "$context/public"
cp "$site/nginx.conf" "$context/nginx.conf"
printf '%s\n' "$version" >"$context/public/version.txt"
# Readable by nginx's workers whatever the checkout's umask was.
chmod -R u=rwX,go=rX "$context"

echo "==> docker build -t $image"
docker build --quiet -t "$image" -f frontend/site.Dockerfile \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg "CREATED=$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)" \
  --build-arg "SOURCE=${SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://example.invalid/latchkey)}" \
  "$context" >/dev/null
echo "==> $image: version $version"
