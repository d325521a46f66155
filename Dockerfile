# One image for the whole service: `taskservice api` (the default command), `taskservice worker`
# and `taskservice migrate`. Plain Dockerfile syntax with no BuildKit-only feature, so that
# `docker compose`, Debian's docker-compose 1.29 and the legacy builder all build it.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /app
# Dependencies first, from the package's metadata alone, so that a change to the code reuses
# this layer. setup.cfg reads README.md for the long description: an empty one will do.
# Editable, so the package runs from /app/src, next to the openapi.yaml and static/ it serves.
COPY pyproject.toml setup.cfg ./
RUN mkdir -p src/taskservice \
 && touch README.md src/taskservice/__init__.py \
 && /opt/venv/bin/pip install --editable . \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel
COPY openapi.yaml ./
COPY static ./static
COPY deploy/healthcheck.py ./deploy/
COPY src ./src
RUN /opt/venv/bin/python3 -m compileall -q src deploy

# The final stage: the interpreter, the virtualenv and the code; no pip, no compiler.
FROM python:3.12-slim
# The virtualenv has no pip (uninstalled above), but the base image's own interpreter, which the
# virtualenv runs on, has one: installed with pip in the official image, a Debian package in a
# Debian-based one (the stand-ins of scripts/compose-standins.sh). Both are removed, and the
# build fails should that interpreter still import pip.
RUN if dpkg-query --show --showformat='${Status}' python3-pip 2>/dev/null | grep -q installed; then \
      apt-get purge --yes --auto-remove python3-pip python3-setuptools python3-wheel; \
    fi \
 && if python3 -m pip --version >/dev/null 2>&1; then \
      python3 -m pip uninstall --yes pip setuptools wheel; \
    fi \
 && ! python3 -m pip --version \
 && groupadd --system --gid 10001 taskservice \
 && useradd --system --uid 10001 --gid taskservice --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin taskservice
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# HOST: in a container gunicorn must listen on every interface, or nothing outside it reaches it.
# XDG_RUNTIME_DIR: where gunicorn puts its control socket; /tmp is the one writable place when
# the root filesystem is read-only (as docker-compose.yml runs it).
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 PORT=8000 XDG_RUNTIME_DIR=/tmp
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# One check for every role: the API answers HTTP, the worker reaches its Docker engine.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python3", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["taskservice"]
CMD ["api"]
