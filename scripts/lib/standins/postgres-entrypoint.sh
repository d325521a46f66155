#!/usr/bin/env bash
# Entrypoint of the postgres stand-in: on first start (empty $PGDATA) create the cluster with
# POSTGRES_USER as superuser, POSTGRES_PASSWORD as its password and POSTGRES_DB, accept
# password logins from other containers, then run the server as the postgres user.
set -euo pipefail

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [[ ${1:-} != postgres ]]; then
  exec "$@"
fi

if [[ $(id -u) -eq 0 ]]; then
  # A fresh named volume or a bind mount may belong to root.
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  if [[ -z ${POSTGRES_PASSWORD:-} ]]; then
    echo "postgres: error: POSTGRES_PASSWORD is empty; set it to initialise the database" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  printf '%s\n' "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  printf '%s\n' "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [[ $POSTGRES_DB != postgres ]]; then
    # No TCP listener while initialising, so a healthcheck over TCP cannot pass too early.
    pg_ctl --silent --wait -o "-c listen_addresses=''" start
    psql -X -q -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres \
      --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db"'
    pg_ctl --silent --wait -m fast stop
  fi
  echo "postgres: initialised $PGDATA with user $POSTGRES_USER and database $POSTGRES_DB"
fi

exec "$@"
