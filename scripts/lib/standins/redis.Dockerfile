# Stand-in for the official redis:7-alpine image, from Debian's Redis 7.0: redis-server and
# redis-cli on PATH (the healthcheck), /data as the working directory, and the server as the
# official entrypoint runs it without a configuration file: every interface, protected mode off.
# Only what docker-compose.yml relies on.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/lib/redis/* /var/log/redis/* \
 && mkdir -p /data \
 && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
