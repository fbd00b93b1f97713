# syntax=docker/dockerfile:1
# llm-router gateway: python:3.11-slim, non-root, no build tools or caches in the final image.
#   docker build -t llm-router .
#   docker run -p 8080:8080 -e OPENAI_API_KEY=... -e MID_BASE_URL=http://my-vllm:8000/v1 llm-router
# Pin the base by digest for bit-for-bit rebuilds: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SOURCE_DATE_EPOCH=315532800
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY router/ router/
# With the fleet extra (Redis and PostgreSQL clients): one image for a single gateway and for a fleet.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile '.[fleet]' \
 && /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/venv/lib

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# The working directory holds what the gateway writes (the spend ledger, SQLite): mount a volume on it.
RUN groupadd --system --gid 10001 router \
 && useradd --system --uid 10001 --gid router --home-dir /var/lib/llm-router --shell /usr/sbin/nologin router \
 && mkdir -p /var/lib/llm-router \
 && chown 10001:10001 /var/lib/llm-router
COPY --from=build /opt/venv /opt/venv
COPY config/ /app/config/
WORKDIR /var/lib/llm-router
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
CMD ["llm-router", "serve", "--config", "/app/config/router.yaml", "--host", "0.0.0.0", "--port", "8080"]
