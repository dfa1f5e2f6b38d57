#!/usr/bin/env bash
# A private PostgreSQL cluster started from the machine's own binaries, for `make run` and the tests.
#
#   scripts/pg.sh start DIR PORT [--throwaway]   initialise DIR when new, start on 127.0.0.1:PORT
#   scripts/pg.sh stop DIR                        stop it (fast shutdown), keeping the data
#   scripts/pg.sh kill DIR                        stop it abruptly (immediate shutdown: a crash), for fault tests
#
# The server always offers TLS with a certificate from a CA made here (DIR/ca.crt), so that the
# service's `sslmode=verify-full` path is exercised against a real server. --throwaway turns off
# fsync: fine for test clusters that are deleted afterwards, never for data you keep.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

find_bindir() {
  local candidate
  if command -v pg_config >/dev/null 2>&1; then
    candidate=$(pg_config --bindir 2>/dev/null || true)
    [ -x "$candidate/initdb" ] && { echo "$candidate"; return; }
  fi
  for candidate in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    [ -x "$candidate/initdb" ] && { echo "$candidate"; return; }
  done
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  return 1
}

install_postgres() {
  echo "pg.sh: PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  if ! command -v apt-get >/dev/null 2>&1; then
    die "no PostgreSQL server binaries (initdb, pg_ctl) and no apt-get: install PostgreSQL 13 or newer and put its bin folder on PATH"
  fi
  if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }; then
    die "could not install PostgreSQL: run 'sudo apt-get install postgresql' (or your system's equivalent) and try again"
  fi
}

bindir=$(find_bindir) || { install_postgres; bindir=$(find_bindir) || die "PostgreSQL installed but initdb not found"; }

# initdb refuses to run as root, so root runs the cluster as the postgres user.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  as_owner=(runuser -u postgres --)
fi

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  die "usage: pg.sh start DIR PORT [--throwaway] | pg.sh stop DIR | pg.sh kill DIR"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data="$dir/data"

case "$cmd" in
start)
  port=${3:-}
  [ -n "$port" ] || die "start needs a port"
  throwaway=${4:-}
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    if [ ${#as_owner[@]} -gt 0 ]; then
      chown postgres "$dir" "$data"
      "${as_owner[@]}" test -w "$data" \
        || die "the postgres user cannot write $data (a parent folder is not searchable by it); clone the project under a folder other users can reach, or run as a normal user"
    fi
    chmod 700 "$data"
    "${as_owner[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    # A CA and a server certificate for localhost/127.0.0.1 signed by it.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=latchkey local CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$data/server.key" -out "$dir/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -days 3650 -extfile "$dir/server.ext" -out "$data/server.crt" >/dev/null 2>&1
    rm -f "$dir/ca.key" "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
    chmod 600 "$data/server.key"
    chmod 644 "$dir/ca.crt"
    [ ${#as_owner[@]} -eq 0 ] || chown postgres "$data/server.key" "$data/server.crt"
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "unix_socket_directories = ''"
      echo "max_connections = 300"
      echo "ssl = on"
      echo "ssl_cert_file = 'server.crt'"
      echo "ssl_key_file = 'server.key'"
      if [ "$throwaway" = "--throwaway" ]; then
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
      fi
    } >>"$data/postgresql.conf"
  fi
  if "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    echo "pg.sh: cluster in $data already running" >&2
  else
    touch "$dir/postgres.log"
    [ ${#as_owner[@]} -eq 0 ] || chown postgres "$dir/postgres.log"
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -o "-p $port" -w -t 60 start >/dev/null \
      || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start (is port $port free?)"; }
  fi
  ;;
stop)
  if [ -f "$data/postmaster.pid" ]; then
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null || true
  fi
  ;;
kill)
  if [ -f "$data/postmaster.pid" ]; then
    "${as_owner[@]}" "$bindir/pg_ctl" -D "$data" -m immediate -w -t 60 stop >/dev/null || true
  fi
  ;;
*)
  die "unknown command $cmd"
  ;;
esac
