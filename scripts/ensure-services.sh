#!/usr/bin/env bash
# Make sure PostgreSQL, RabbitMQ and Redis answer at DATABASE_URL, AMQP_URL and
# REDIS_URL, and that the database exists.
#
# Local services (127.0.0.1 / localhost) that are down get started, and installed
# from Debian first when missing. Remote services are only checked. Nothing that
# already runs is stopped or restarted, so a second run is a quick no-op.
#
# Environment:
#   DATABASE_URL       default postgresql://127.0.0.1:5432/taskservice
#   AMQP_URL           default amqp://guest:guest@127.0.0.1:5672/%2F
#   REDIS_URL          default redis://127.0.0.1:6379/0
#   SERVICES_WAIT      seconds to wait for a started service (default 60)
#   PG_TRUST_LOOPBACK  1: if the URL's user cannot log in to a local server, let
#                      loopback connections in without a password (dev/CI only)
set -euo pipefail

me=ensure-services
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }

database_url=${DATABASE_URL:-postgresql://127.0.0.1:5432/taskservice}
amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379/0}
wait_secs=${SERVICES_WAIT:-60}

command -v python3 >/dev/null || die "python3 is required to parse the service URLs; install it"

# Prints: host port user dbname (an empty field as "-").
parse_url() {
  python3 - "$1" "$2" <<'EOF'
import sys
from urllib.parse import urlsplit, unquote
url, default_port = sys.argv[1], int(sys.argv[2])
try:
    u = urlsplit(url)
    port = u.port or default_port
except ValueError as exc:
    sys.exit(f"bad URL {url!r}: {exc}")
fields = [u.hostname or "", str(port), unquote(u.username or ""), unquote(u.path.lstrip("/"))]
print(" ".join(f or "-" for f in fields))
EOF
}

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 || $1 == - ]]; }
can_connect() { timeout 3 bash -c ">/dev/tcp/$1/$2" 2>/dev/null; }

wait_for_port() { # name host port
  local deadline=$((SECONDS + wait_secs))
  until can_connect "$2" "$3"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
  log "$1 answers at $2:$3"
}

is_root() { [[ $(id -u) -eq 0 ]]; }
has_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

apt_updated=
apt_install() {
  if ! is_root || ! command -v apt-get >/dev/null; then
    die "$* is not installed; install it (Debian: sudo apt-get install $*) or run: sudo $0"
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z $apt_updated ]]; then
    apt-get update -qq
    apt_updated=1
  fi
  log "installing Debian's $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------

read -r pg_host pg_port pg_user pg_db <<<"$(parse_url "$database_url" 5432)"
[[ $pg_host == - ]] && pg_host=127.0.0.1
[[ $pg_user == - ]] && pg_user=${PGUSER:-$(id -un)}
[[ $pg_db == - ]] && pg_db=$pg_user

start_postgres() {
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  # The package may have started a cluster on its own.
  can_connect "$pg_host" "$pg_port" && return 0
  is_root || die "PostgreSQL is not running at $pg_host:$pg_port and only root can start it; run: sudo $0"

  local version cluster status
  # Pick the cluster configured for this port, so we never start an unrelated one.
  read -r version cluster status < <(pg_lsclusters -h | awk -v p="$pg_port" '$3 == p { print $1, $2, $4; exit }') || true
  if [[ ${status:-} == online* ]]; then
    die "PostgreSQL $version/$cluster runs but not on $pg_host:$pg_port; check listen_addresses in /etc/postgresql/$version/$cluster/postgresql.conf"
  fi
  if [[ -z ${version:-} ]]; then
    if [[ -n $(pg_lsclusters -h) ]]; then
      die "no PostgreSQL cluster is configured for port $pg_port (see pg_lsclusters); fix DATABASE_URL or the cluster's port"
    fi
    version=$(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | awk -F/ '$5 != "*" { print $5 }' | sort -V | tail -n1)
    [[ -n $version ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql; install Debian's postgresql"
    cluster=main
    log "creating PostgreSQL $version cluster '$cluster' on port $pg_port"
    pg_createcluster --port "$pg_port" "$version" "$cluster" >/dev/null
  fi
  log "starting PostgreSQL $version/$cluster"
  if has_systemd; then
    systemctl start "postgresql@$version-$cluster" || die "could not start PostgreSQL; see: journalctl -u postgresql@$version-$cluster"
  else
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start ||
      die "could not start PostgreSQL; see /var/log/postgresql/postgresql-$version-$cluster.log"
  fi
}

# psql as the URL's user against the maintenance database; SQL comes on stdin so
# that psql variables quote identifiers and literals for us.
psql_as_url_user() {
  local admin_url
  admin_url=$(python3 -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u._replace(path="/postgres").geturl())' "$database_url")
  psql "$admin_url" -X -q -At -v ON_ERROR_STOP=1 -v db="$pg_db" -v usr="$pg_user"
}

# Fallback when the URL's user cannot connect (a fresh install has only the
# 'postgres' role and password auth over TCP): the superuser over the local socket.
psql_as_superuser() {
  runuser -u postgres -- psql -p "$pg_port" -d postgres -X -q -At -v ON_ERROR_STOP=1 -v db="$pg_db" -v usr="$pg_user"
}

ensure_database() {
  command -v psql >/dev/null || apt_install postgresql-client
  local runner exists
  if psql_as_url_user <<<'select 1' >/dev/null 2>&1; then
    runner=psql_as_url_user
  elif is_root && [[ -S /var/run/postgresql/.s.PGSQL.$pg_port ]]; then
    runner=psql_as_superuser
    if [[ -z $(psql_as_superuser <<<"select 1 from pg_roles where rolname = :'usr'") ]]; then
      log "creating PostgreSQL role '$pg_user'"
      psql_as_superuser <<<'create role :"usr" login createdb' >/dev/null
    fi
  else
    die "cannot connect to PostgreSQL at $pg_host:$pg_port as '$pg_user'; check the user/password in DATABASE_URL and pg_hba.conf, or run: sudo $0"
  fi

  exists=$($runner <<<"select 1 from pg_database where datname = :'db'")
  if [[ -z $exists ]]; then
    log "creating database '$pg_db'"
    $runner <<<'create database :"db" owner :"usr"' >/dev/null
  fi

  if ! psql "$database_url" -X -q -At -c 'select 1' >/dev/null 2>&1; then
    [[ ${PG_TRUST_LOOPBACK:-} == 1 && $runner == psql_as_superuser ]] ||
      die "database '$pg_db' exists but '$pg_user' cannot log in over TCP; put a password in DATABASE_URL, or allow loopback logins in pg_hba.conf (for development/CI: rerun with PG_TRUST_LOOPBACK=1)"
    trust_loopback
    psql "$database_url" -X -q -At -c 'select 1' >/dev/null ||
      die "'$pg_user' still cannot log in to '$pg_db' at $pg_host:$pg_port; check pg_hba.conf"
  fi
}

# Opt-in only: it weakens authentication for every local client of the server.
# A reload applies it without restarting the server.
trust_loopback() {
  local hba line
  hba=$(psql_as_superuser <<<'show hba_file')
  for line in 'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust'; do
    if ! grep -qxF "$line" "$hba"; then
      log "adding '$line' at the top of $hba"
      sed -i "1i $line" "$hba"
    fi
  done
  psql_as_superuser <<<'select pg_reload_conf()' >/dev/null
}

if can_connect "$pg_host" "$pg_port"; then
  log "PostgreSQL answers at $pg_host:$pg_port"
elif is_local "$pg_host"; then
  start_postgres
  wait_for_port PostgreSQL "$pg_host" "$pg_port" ||
    die "PostgreSQL does not answer at $pg_host:$pg_port after ${wait_secs}s; see /var/log/postgresql/"
else
  die "PostgreSQL does not answer at $pg_host:$pg_port; start it or fix DATABASE_URL"
fi
# Only a local server is ours to provision; a remote database is its owner's job.
if is_local "$pg_host"; then
  ensure_database
fi

# --- RabbitMQ ---------------------------------------------------------------

read -r mq_host mq_port _ _ <<<"$(parse_url "$amqp_url" 5672)"
[[ $mq_host == - ]] && mq_host=127.0.0.1

start_rabbitmq() {
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  can_connect "$mq_host" "$mq_port" && return 0
  is_root || die "RabbitMQ is not running at $mq_host:$mq_port and only root can start it; run: sudo $0"
  # A node that is still booting has no listener yet; a second node would clash with it.
  if pgrep -u rabbitmq beam.smp >/dev/null; then
    log "a RabbitMQ node is already running; waiting for its listener"
    return 0
  fi
  log "starting RabbitMQ (can take 10-20 s)"
  if has_systemd; then
    systemctl start rabbitmq-server || die "could not start RabbitMQ; see: journalctl -u rabbitmq-server"
  else
    rabbitmq-server -detached || die "could not start RabbitMQ; see /var/log/rabbitmq/"
  fi
}

if can_connect "$mq_host" "$mq_port"; then
  log "RabbitMQ answers at $mq_host:$mq_port"
elif is_local "$mq_host"; then
  start_rabbitmq
  wait_for_port RabbitMQ "$mq_host" "$mq_port" ||
    die "RabbitMQ does not answer at $mq_host:$mq_port after ${wait_secs}s; see /var/log/rabbitmq/"
else
  die "RabbitMQ does not answer at $mq_host:$mq_port; start it or fix AMQP_URL"
fi

# --- Redis ------------------------------------------------------------------

# PING the server at REDIS_URL (AUTH first when the URL has a password), with neither a
# client library nor redis-cli, which a machine that only uses a remote Redis may lack.
# Exit status: 0 PONG; 1 nothing answers; 2 an answer that waiting will not change (a wrong
# password, not Redis); 3 one that it may (still loading). The reason goes to stdout.
redis_ping() {
  python3 - "$redis_url" <<'EOF'
import socket, ssl, sys
from urllib.parse import parse_qs, unquote, urlsplit

url = sys.argv[1]
where = url
try:
    u = urlsplit(url)
    if u.scheme == "unix":
        where = u.path
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(3)
        sock.connect(u.path)
    elif u.scheme in ("redis", "rediss"):
        host, port = u.hostname or "127.0.0.1", u.port or 6379
        where = f"{host}:{port}"
        sock = socket.create_connection((host, port), timeout=3)
        if u.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    else:
        print(f"REDIS_URL has the scheme {u.scheme!r}; expected redis://, rediss:// or unix://")
        sys.exit(2)
except ValueError as exc:
    print(f"bad REDIS_URL {url!r}: {exc}")
    sys.exit(2)
except ssl.SSLError as exc:
    print(f"TLS with {where} failed: {exc}")
    sys.exit(2)
except OSError as exc:
    print(f"cannot connect to {where}: {exc}")
    sys.exit(1)
replies = sock.makefile("rb")


def command(*args: str) -> str:
    request = b"*%d\r\n" % len(args)
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    sock.sendall(request)
    return replies.readline().decode(errors="replace").strip()


try:
    password = unquote(u.password or "") or parse_qs(u.query).get("password", [""])[0]
    if password:
        user = unquote(u.username or "")
        reply = command("AUTH", user, password) if user else command("AUTH", password)
        if not reply.startswith("+"):
            print(f"Redis at {where} refused the credentials in REDIS_URL: {reply[:200]}")
            sys.exit(2)
    reply = command("PING")
except OSError as exc:
    print(f"{where} dropped the connection: {exc}")
    sys.exit(1)
if reply == "+PONG":
    sys.exit(0)
if reply.startswith(("-LOADING", "-BUSY")):
    print(f"Redis at {where} is not ready: {reply[:200]}")
    sys.exit(3)
if reply.startswith("-NOAUTH"):
    print(f"Redis at {where} wants a password; put it in REDIS_URL (redis://:PASSWORD@HOST:PORT/0)")
    sys.exit(2)
print(f"{where} answers, but not as Redis answers PING: {reply[:200] or 'nothing'}")
sys.exit(2)
EOF
}

# Wait until PING answers PONG; die at once on an answer that waiting will not change.
wait_for_redis() { # hint for the message when it does not answer in time
  local deadline=$((SECONDS + wait_secs)) reason status
  while :; do
    status=0
    reason=$(redis_ping) || status=$?
    case $status in
      0) log "Redis answers PING at $redis_where"; return 0 ;;
      2) die "$reason" ;;
    esac
    ((SECONDS < deadline)) || die "Redis does not answer PING at $redis_where after ${wait_secs}s ($reason); $1"
    sleep 1
  done
}

if [[ $redis_url == unix:* ]]; then
  redis_where=${redis_url#unix://}
  redis_where=${redis_where%%\?*}
  redis_host=
else
  read -r redis_host redis_port _ _ <<<"$(parse_url "$redis_url" 6379)"
  [[ $redis_host == - ]] && redis_host=127.0.0.1
  redis_where=$redis_host:$redis_port
fi

# Redis only caches here, so the server started here keeps nothing on disk (no snapshots, no
# append-only file), listens on the loopback only ("-::1": IPv6 where the machine has it) and
# runs as the redis user. Under systemd, Debian's own unit serves its port (6379, from
# /etc/redis/redis.conf).
start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  # The package may have started its own server.
  can_connect "$redis_host" "$redis_port" && return 0
  is_root || die "Redis is not running at $redis_where and only root can start it; run: sudo $0"
  if has_systemd && [[ $redis_port == 6379 ]] && systemctl cat redis-server >/dev/null 2>&1; then
    log "starting Redis (systemd unit redis-server)"
    systemctl start redis-server || die "could not start Redis; see: journalctl -u redis-server"
    return 0
  fi
  local as=() log_file=/var/log/redis/redis-server-$redis_port.log
  mkdir -p /var/log/redis /var/lib/redis /run/redis
  if id -u redis >/dev/null 2>&1; then
    chown redis /var/log/redis /run/redis
    [[ ! -e $log_file ]] || chown redis "$log_file"
    as=(runuser -u redis --)
  fi
  log "starting redis-server on port $redis_port (loopback, no persistence; log: $log_file)"
  "${as[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$redis_port" \
    --save "" --appendonly no --dir /var/lib/redis --logfile "$log_file" \
    --pidfile "/run/redis/redis-server-$redis_port.pid" ||
    die "could not start redis-server on port $redis_port; see $log_file"
}

if [[ -z $redis_host ]]; then
  # A Unix socket: someone else's server, only checked.
  wait_for_redis "start it or fix REDIS_URL"
elif can_connect "$redis_host" "$redis_port"; then
  wait_for_redis "is that port Redis's? check REDIS_URL"
elif is_local "$redis_host"; then
  start_redis
  wait_for_redis "see /var/log/redis/"
else
  die "Redis does not answer at $redis_where; start it or fix REDIS_URL"
fi
