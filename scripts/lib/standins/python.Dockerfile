# Stand-in for python:3.12-slim, from Debian's packages, for a machine that reaches no registry.
# Debian bookworm ships Python 3.11; the project's Dockerfile relies only on python3,
# `python3 -m venv` and pip, which this provides as the real image does.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
# The build host's CA bundle: where PyPI is reached through a TLS-inspecting proxy, pip inside
# `docker build` has to trust what the host trusts.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
