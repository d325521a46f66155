# Stand-in for the official nginx image, from Debian's nginx: the same layout (nginx.conf
# including /etc/nginx/conf.d/*.conf, logs on stdout/stderr, curl for healthchecks) and
# the same command. Only what docker-compose.yml relies on; no /etc/nginx/templates.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx curl \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* /etc/nginx/conf.d/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
COPY nginx.conf /etc/nginx/nginx.conf
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
