# logpipe: ships a Dify stack's Docker logs to Loki and serves metrics derived from them.
#
#   docker build -t logpipe .
#   docker run -d --name logpipe \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro -v logpipe-state:/var/lib/logpipe \
#     -e LOGPIPE_LOKI_URL=http://loki:3100 -e LOGPIPE_COMPOSE_PROJECT=docker -p 9108:9108 logpipe
#
# The process runs as the unprivileged user `logpipe` (uid/gid 10001). To read the Docker socket it needs the
# socket's group: pass it with `--group-add` / compose `group_add` (find it with `stat -c %g /var/run/docker.sock`;
# often 999 or 998 on Linux, 0 on Docker Desktop). PYTHON_IMAGE lets an air-gapped build use a mirrored base.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# A virtualenv is one directory to copy into the final stage, without pip's caches or build leftovers.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile . \
 && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOGPIPE_STATE_DIR=/var/lib/logpipe
RUN groupadd --system --gid 10001 logpipe \
 && useradd --system --uid 10001 --gid logpipe --home-dir /var/lib/logpipe --no-create-home \
      --shell /usr/sbin/nologin logpipe \
 && mkdir -p /var/lib/logpipe \
 && chown logpipe:logpipe /var/lib/logpipe
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/logpipe
# Checkpoints and the spool: keep them on a volume so a new container resumes where the old one stopped.
VOLUME ["/var/lib/logpipe"]
EXPOSE 9108
# logpipe drains within 8 s of SIGTERM (Docker waits 10 s before SIGKILL); a second signal exits at once.
STOPSIGNAL SIGTERM
# /healthz on the metrics address (LOGPIPE_METRICS_ADDR, default 0.0.0.0:9108). No curl in a slim image: Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; h, _, p = os.environ.get('LOGPIPE_METRICS_ADDR', '0.0.0.0:9108').rpartition(':'); h = h.strip('[]'); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; h = '[' + h + ']' if ':' in h else h; u.urlopen('http://' + h + ':' + p + '/healthz', timeout=3)"]
ENTRYPOINT ["logpipe"]
CMD ["run"]
