# syntax=docker/dockerfile:1
# dustspot trainer image: `pip install .[trainer]` (torch, segmentation-models-pytorch, NNCF) for
# `dustspot synth`, `dustspot train`, `dustspot export` and `dustspot evaluate`. Not needed to
# run workers (deploy/worker.Dockerfile has no torch).
#
# Build from the repository root:
#   docker build -f deploy/trainer.Dockerfile -t dustspot-trainer .
# Train, then publish into a registry that workers read (DUSTSPOT_MODELS):
#   docker run --rm -v "$PWD/data:/data" -v "$PWD/runs:/runs" dustspot-trainer \
#       train /data/backgrounds --run /runs/v2 --minutes 240
#   docker run --rm -v "$PWD/runs:/runs" -v /srv/dustspot-models:/models \
#       -e DUSTSPOT_MODELS=/models dustspot-trainer export /runs/v2 --version v2 --no-latest
#
# torch: setup.cfg pins torch==2.14.1 / torchvision==0.29.1. PyPI's Linux wheels of torch are
# the CUDA builds (gigabytes of nvidia-* packages); the CPU builds come from PyTorch's CPU index,
# installed first so that `.[trainer]` finds the pin already satisfied (2.14.1+cpu matches
# ==2.14.1). Set TORCH_INDEX_URL to a mirror (or to PyPI for the CUDA build) as needed.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.14.1 torchvision==0.29.1
WORKDIR /src
COPY pyproject.toml setup.cfg MANIFEST.in README.md ./
COPY shared/ shared/
COPY producer/ producer/
COPY worker/ worker/
COPY trainer/ trainer/
RUN /opt/venv/bin/pip install ".[trainer]"

RUN groupadd --system --gid 10001 dustspot \
 && useradd --system --uid 10001 --gid dustspot --create-home --home-dir /home/dustspot \
            --shell /usr/sbin/nologin dustspot \
 && mkdir -p /runs /models \
 && chown dustspot:dustspot /runs /models
COPY models/ /opt/dustspot/models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DUSTSPOT_MODELS=/opt/dustspot/models
WORKDIR /runs
USER 10001:10001
ENTRYPOINT ["dustspot"]
CMD ["train", "--help"]
