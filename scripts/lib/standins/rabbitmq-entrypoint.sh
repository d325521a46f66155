#!/usr/bin/env bash
# Entrypoint of the rabbitmq stand-in: write the node's configuration (the default user from
# RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, logs to the console), then run the server as
# the rabbitmq user.
set -euo pipefail

if [[ ${1:-} != rabbitmq-server ]]; then
  exec "$@"
fi

if [[ $(id -u) -eq 0 ]]; then
  # The default user applies only when the node's database is created, as in the real image.
  {
    echo "loopback_users.guest = false"
    echo "listeners.tcp.default = 5672"
    echo "log.console = true"
    echo "log.console.level = info"
    echo "log.file = false"
    if [[ -n ${RABBITMQ_DEFAULT_USER:-} ]]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
    if [[ -n ${RABBITMQ_DEFAULT_PASS:-} ]]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
  } >/etc/rabbitmq/rabbitmq.conf
  chown rabbitmq:rabbitmq /etc/rabbitmq/rabbitmq.conf
  chmod 600 /etc/rabbitmq/rabbitmq.conf
  mkdir -p /var/lib/rabbitmq
  chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$0" "$@"
fi

exec /usr/lib/rabbitmq/bin/rabbitmq-server
