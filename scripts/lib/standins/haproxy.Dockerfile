# Stand-in for the official haproxy image, from Debian's HAProxy 2.6: configuration read from
# /usr/local/etc/haproxy/haproxy.cfg, master-worker mode in the foreground, as the real one.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /usr/local/etc/haproxy \
 && cp /etc/haproxy/haproxy.cfg /usr/local/etc/haproxy/haproxy.cfg
USER haproxy
# SIGUSR1: a soft stop that lets open connections finish, as in the official image.
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
