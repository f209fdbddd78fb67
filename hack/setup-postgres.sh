#!/usr/bin/env bash
# Prints the directory of PostgreSQL's server programs (initdb, pg_ctl),
# installing Debian's postgresql and pgbouncer packages when they are
# missing and this is root, as on CI machines. The PostgreSQL store's tests
# start a throwaway server, and a PgBouncer in front of it, from them
# (internal/pgtest; PG_BIN and PGBOUNCER point it at them).
set -euo pipefail
find_bin() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return 0; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  return 1
}
have_bouncer() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
if find_bin >/dev/null && have_bouncer; then find_bin; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL and PgBouncer (Debian packages postgresql, pgbouncer) ..." >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql pgbouncer >&2
  find_bin
  exit 0
fi
echo "PostgreSQL or PgBouncer not found: install the Debian packages postgresql and pgbouncer (apt-get install postgresql pgbouncer)" >&2
exit 1
