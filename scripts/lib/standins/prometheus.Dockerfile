# Stand-in for the official prom/prometheus image, from Debian's Prometheus 2.42: the server as
# the entrypoint with the official command (configuration from /etc/prometheus/prometheus.yml,
# data in /prometheus), run as nobody, and wget for the healthcheck (the official image is
# busybox-based and has it). Only what docker-compose.yml relies on.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* /var/lib/prometheus/* \
 && mkdir -p /prometheus \
 && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
