#!/usr/bin/env bash
# Prints the path of a Python that has aiosmtpd (tests/mail/requirements.txt), for the SMTP server
# the tests start (tests/mail/smtp_sink.py): python3 itself when it has the module (CI installs
# it), otherwise a virtualenv of its own in ~/.cache/latchkey/mail-sink, made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  command -v python3
  exit 0
fi
venv="${XDG_CACHE_HOME:-$HOME/.cache}/latchkey/mail-sink"
mkdir -p "$(dirname "$venv")"
# Test processes run in parallel: one makes the virtualenv, the others wait for it.
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/mail/requirements.txt >&2
fi
echo "$venv/bin/python"
