# Stand-in for the official rabbitmq:3 image, from Debian's RabbitMQ 3.10: data in
# /var/lib/rabbitmq, RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, logs on stdout, and
# rabbitmq-diagnostics for the healthcheck. Only what docker-compose.yml relies on.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* /var/lib/rabbitmq/mnesia /var/log/rabbitmq/*
# HOME is where the Erlang cookie lives: the CLI tools (the healthcheck) find it there.
ENV RABBITMQ_DATA_DIR=/var/lib/rabbitmq HOME=/var/lib/rabbitmq LANG=C.UTF-8
COPY rabbitmq-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/rabbitmq
EXPOSE 5672
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["rabbitmq-server"]
