#!/usr/bin/env bash
# `make image`: the static musl binary, then the FROM-scratch image around it.
#
#   IMAGE    name:tag to build (default latchkey-api:dev)
#   VERSION  org.opencontainers.image.version label (default: `git describe`)
#   SOURCE   org.opencontainers.image.source label (default: the origin remote's URL, if any)
#
# The image is built for this machine's architecture: x86_64 -> x86_64-unknown-linux-musl,
# aarch64 (Graviton) -> aarch64-unknown-linux-musl. ring compiles C, so a cross build would need
# the other architecture's musl C compiler; building on a host (or CI runner) of the target
# architecture avoids that and is what CI does.
#
# Installs what is missing (the rustup target, musl-gcc, `file`) and refuses a binary that is
# not statically linked: the image has no libc to load it with.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image: $*" >&2; exit 1; }

image=${IMAGE:-latchkey-api:dev}
case "$(uname -m)" in
x86_64 | amd64) target=x86_64-unknown-linux-musl ;;
aarch64 | arm64) target=aarch64-unknown-linux-musl ;;
*) die "no musl target known for $(uname -m)" ;;
esac

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed): start dockerd or set DOCKER_HOST"

apt_install() {
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  command -v apt-get >/dev/null 2>&1 || die "missing $*, and no apt-get to install it with: install $* and try again"
  echo "build-image: installing $*" >&2
  # Another apt run (unattended upgrades, a provisioning script) may hold the lock: wait for it.
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}
need=()
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v file >/dev/null 2>&1 || need+=(file)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
rustup target list --installed 2>/dev/null | grep -qx "$target" || rustup target add "$target"

# ring's C and assembly must be compiled for musl too; musl-gcc is musl-tools' wrapper.
cc_var="CC_${target//-/_}"
export "$cc_var=${!cc_var:-musl-gcc}"
echo "==> cargo build --release --target $target -p api-container"
cargo build --release --locked --target "$target" -p api-container

target_dir=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/$target/release/api-container"
[ -x "$binary" ] || die "cargo reported success but $binary is missing"
kind=$(file -b "$binary")
case "$kind" in
*"statically linked"* | *"static-pie linked"*) ;;
*) die "$binary is not statically linked ($kind): it cannot run FROM scratch" ;;
esac

# The build context holds the binary alone: nothing else from the repository (or a target
# folder of gigabytes) is sent to the engine, and nothing else can end up in the image.
context=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-image.XXXXXX")
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/api-container"
chmod 0555 "$context/api-container"

version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The commit time, not the build time: two builds of one commit carry the same labels.
created=$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:00Z)
source_url=${SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://example.invalid/latchkey)}

echo "==> docker build -t $image"
docker build --quiet -t "$image" -f api-container/Dockerfile \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$created" \
  --build-arg "SOURCE=$source_url" \
  "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "==> $image: $((size / 1024)) KiB, $kind"
