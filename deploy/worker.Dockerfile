# syntax=docker/dockerfile:1
# dustspot worker image: `pip install .[worker]` (OpenVINO, Redis/rq, boto3; no torch), the
# bundled models/ baked in, a non-root user. The same image runs the dashboard and the producer
# (`dustspot dashboard`, `dustspot enqueue`): see deploy/compose.yaml.
#
# Build from the repository root (the context; .dockerignore keeps runs/, .venv, .env out):
#   docker build -f deploy/worker.Dockerfile -t dustspot-worker .
# Run:
#   docker run --rm -e REDIS_URL=redis://:PASSWORD@redis-host:6379/0 dustspot-worker
#
# Models: the image's registry is /opt/dustspot/models (a copy of the repository's models/).
# Point DUSTSPOT_MODELS at another registry (an s3:// prefix, or a mounted volume) to roll models
# out without a new image: the worker re-reads `latest` before every job (docs/operations.md).
# Versions from an S3 registry are downloaded into DUSTSPOT_CACHE (writable by the worker).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml setup.cfg MANIFEST.in README.md ./
COPY shared/ shared/
COPY producer/ producer/
COPY worker/ worker/
COPY trainer/ trainer/
# The worker extra must not pull in torch: fail the build if anything did.
RUN /opt/venv/bin/pip install ".[worker]" \
 && /opt/venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

FROM ${PYTHON_IMAGE}
# OpenVINO and OpenCV need only libc, libstdc++ and zlib, which the slim image has.
RUN groupadd --system --gid 10001 dustspot \
 && useradd --system --uid 10001 --gid dustspot --home-dir /opt/dustspot --no-create-home \
            --shell /usr/sbin/nologin dustspot \
 && install -d -o 10001 -g 10001 /var/cache/dustspot
COPY --from=build /opt/venv /opt/venv
COPY models/ /opt/dustspot/models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DUSTSPOT_MODELS=/opt/dustspot/models \
    DUSTSPOT_CACHE=/var/cache/dustspot \
    DUSTSPOT_THREADS=1
WORKDIR /opt/dustspot
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# Healthy = Redis answers (REDIS_URL) and the model resolves in the registry (DUSTSPOT_MODELS,
# DUSTSPOT_MODEL or the default dustspot-unet). Files are verified by sha256 when the worker
# compiles the model, not every 30 s here.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os; from shared.queues import connect; from shared.registry import resolve; connect().ping(); resolve(os.environ.get('DUSTSPOT_MODEL') or None, verify=False)"]

# One inference thread per worker (DUSTSPOT_THREADS), one worker per core: scale with replicas.
# `exec`: the worker is the process that receives SIGTERM, finishes its current scan and exits;
# give it time (docker stop -t 600, compose stop_grace_period, k8s terminationGracePeriodSeconds).
CMD ["sh", "-c", "exec dustspot worker --threads \"${DUSTSPOT_THREADS:-1}\""]
