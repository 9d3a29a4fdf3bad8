# azproxy container image.
#
#   docker build -t azproxy:latest .
#   docker run --rm -p 3000:3000 azproxy:latest
#
# Published for linux/amd64 and linux/arm64 by .github/workflows/release.yml under the
# name in deploy/IMAGE. Needs BuildKit (the default builder since Docker 23; set
# DOCKER_BUILDKIT=1 on Docker 20.10).
#
# Two stages: `build` turns requirements.lock (every dependency pinned, with the sha256
# of each file) and this package into wheels; the final stage installs those wheels and
# nothing else, so two builds of one commit hold the same dependencies.
#
# Configuration comes only from the environment at run time (AZPROXY_*,
# AZURE_OPENAI_*, OPENAI_API_VERSION); nothing secret is baked into the image.
# The command passes --port 3000, and a flag wins over AZPROXY_PORT. To listen
# elsewhere, override the command (`azproxy serve --host 0.0.0.0 --port 8080`)
# and set AZPROXY_PORT=8080 too, so the health check probes the same port.
FROM python:3.11-slim AS build

WORKDIR /src
# The lock alone first: this slow layer is reused while only azproxy's code changes.
# --require-hashes refuses any file whose sha256 is not in the lock; --only-binary,
# since the slim image has no compiler (every pin has wheels for amd64 and arm64).
COPY requirements.lock .
RUN pip wheel --no-cache-dir --disable-pip-version-check --require-hashes \
        --only-binary=:all: --wheel-dir /wheels -r requirements.lock
# .dockerignore lets only the package and its packaging files in.
COPY . .
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

# The rest of the OCI labels (source, version, revision, created) are the release
# workflow's, which knows them.
LABEL org.opencontainers.image.title="azproxy" \
      org.opencontainers.image.description="A small, fast streaming proxy that lets OpenAI API clients use Azure OpenAI unchanged" \
      org.opencontainers.image.licenses="MIT"

# AZPROXY_SHUTDOWN_GRACE_S: on SIGTERM, streams in flight may run 7 s more, so azproxy
# has exited (the grace plus about 1 s to close) before `docker stop` sends SIGKILL at
# its default 10 s. Raise it together with the stop timeout: docker stop -t, compose's
# stop_grace_period, Kubernetes' terminationGracePeriodSeconds.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AZPROXY_PORT=3000 \
    AZPROXY_SHUTDOWN_GRACE_S=7

# Offline (--no-index) from the build stage's wheels, mounted for this step only so
# that no wheel stays behind in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --no-index /wheels/*.whl

# A numeric user that exists in no image file: Kubernetes' runAsNonRoot can
# verify a numeric UID, and no useradd is needed in the base image.
USER 10001:10001

EXPOSE 3000

# No curl in the slim image: python's urllib raises (exit 1) on a refused
# connection or any non-2xx answer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('AZPROXY_PORT', '3000') + '/healthz', timeout=2)"]

# Exec form: azproxy is PID 1 and receives SIGTERM itself, so streams in
# flight can finish within the shutdown grace period before it exits.
STOPSIGNAL SIGTERM
CMD ["azproxy", "serve", "--host", "0.0.0.0", "--port", "3000"]
