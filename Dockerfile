# azproxy container image.
#
#   docker build -t azproxy:latest .
#   docker run --rm -p 3000:3000 azproxy:latest
#
# Configuration comes only from the environment at run time (AZPROXY_*,
# AZURE_OPENAI_*, OPENAI_API_VERSION); nothing secret is baked into the image.
# The command passes --port 3000, and a flag wins over AZPROXY_PORT. To listen
# elsewhere, override the command (`azproxy serve --host 0.0.0.0 --port 8080`)
# and set AZPROXY_PORT=8080 too, so the health check probes the same port.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AZPROXY_PORT=3000

# .dockerignore lets only the package and its packaging files in.
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir "./[entra]" \
    && rm -rf /src

WORKDIR /
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
