#!/bin/sh
# The compose test's stand-in for postgres:15's entrypoint (tests/compose/local.yaml), for the variables compose.yaml
# sets: POSTGRES_USER, POSTGRES_PASSWORD_FILE, POSTGRES_HOST_AUTH_METHOD. Initialises the cluster once (scram for
# every connection, the socket included), then runs PostgreSQL as the postgres user on every address.
set -eu
PGDATA=/var/lib/postgresql/data
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  setpriv --reuid=postgres --regid=postgres --init-groups \
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$POSTGRES_PASSWORD_FILE" --auth=scram-sha-256 >/dev/null
  echo "host all all all ${POSTGRES_HOST_AUTH_METHOD}" >> "$PGDATA/pg_hba.conf"
fi
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*'
