#!/usr/bin/env bash
# The kdf crate's tests on aarch64 (the Lambda's architecture), run under QEMU's user-mode
# emulator: the ARMv8 SHA-2 backend is compiled only for aarch64, so on an x86_64 machine the
# known-answer vectors and the proptests against the pbkdf2 crate would never reach it otherwise.
# QEMU's `max` CPU has the SHA-2 instructions; KDF_BACKENDS_REQUIRED makes the run fail if they
# were not found (a run that quietly tested only the portable backend would prove nothing).
# On an aarch64 machine the tests run natively. Installs what is missing: the Rust target, and
# Debian's qemu-user and aarch64 cross linker (apt-get as root, or through sudo -n).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "test-kdf-arm.sh: $*" >&2; exit 1; }

if [ "$(uname -m)" = aarch64 ]; then
  KDF_BACKENDS_REQUIRED=ArmSha2 cargo test --locked -p kdf
  exit 0
fi

missing=()
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]}, and no apt-get to install them with"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  echo "==> apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]}"
fi
if ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "==> rustup target add aarch64-unknown-linux-gnu"
  rustup target add aarch64-unknown-linux-gnu
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu"
KDF_BACKENDS_REQUIRED=ArmSha2 cargo test --locked -p kdf --target aarch64-unknown-linux-gnu
