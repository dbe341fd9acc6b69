#!/usr/bin/env bash
# A throwaway PostgreSQL server for the multi-machine study tests: installs Debian's
# server if missing, starts one on 127.0.0.1:54329 in a temporary directory, prints its
# URL. `.ci/postgres.sh stop DIR` stops it. Needs root (apt-get, runuser).
set -euo pipefail
if [ "${1:-}" = stop ]; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  runuser -u postgres -- "$bin/pg_ctl" -D "$2/data" -m immediate stop >/dev/null
  rm -rf "$2"
  exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/compress-pg.XXXXXX)
chown postgres "$dir"
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p 54329 -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
echo "postgresql://postgres@127.0.0.1:54329/postgres $dir"
