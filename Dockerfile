# syntax=docker/dockerfile:1.7
# robustlab images, two targets:
#   docker build --target cpu  -t robustlab:cpu  .   # API, CPU workers (python:3.11-slim, CPU torch)
#   docker build --target cuda -t robustlab:cuda .   # GPU workers (CUDA runtime base, CUDA torch)
# Both run as the non-root user `robustlab` (uid 10001), keep their data in /data (a volume), and
# start `robustlab`: the command is `api` by default, `worker` for workers (docker-compose.yml).
# torch/torchvision versions come from constraints/cpu.txt in both (the pins hold for the CUDA
# wheels too: 2.13.0 matches 2.13.0+cu128); only the wheel index differs.

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG CUDA_WHEELS=https://download.pytorch.org/whl/cu128

# --- cpu: build a virtual environment -----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints/ constraints/
# torch first, in its own layer: it is most of the image and changes least often.
RUN pip install -c constraints/cpu.txt --index-url https://download.pytorch.org/whl/cpu torch torchvision
COPY pyproject.toml README.md ./
COPY core/ core/
COPY models/ models/
COPY reports/ reports/
COPY jobstore/ jobstore/
COPY artifactstore/ artifactstore/
COPY worker/ worker/
COPY service/ service/
COPY robustlab/ robustlab/
RUN pip install -c constraints/cpu.txt . && pip install -r constraints/security.txt \
    && python -c "import robustlab.cli, service.client, torchattacks"

# --- cuda: the same, on a CUDA runtime base -----------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda-build
ARG CUDA_WHEELS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints/ constraints/
RUN pip install -c constraints/cpu.txt --index-url ${CUDA_WHEELS} torch torchvision
COPY pyproject.toml README.md ./
COPY core/ core/
COPY models/ models/
COPY reports/ reports/
COPY jobstore/ jobstore/
COPY artifactstore/ artifactstore/
COPY worker/ worker/
COPY service/ service/
COPY robustlab/ robustlab/
RUN pip install -c constraints/cpu.txt . && pip install -r constraints/security.txt \
    && python -c "import robustlab.cli, service.client, torchattacks"

FROM ${CUDA_IMAGE} AS cuda
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin robustlab \
    && mkdir -p /data && chown robustlab:robustlab /data
COPY --from=cuda-build /opt/venv /opt/venv
COPY examples/ /app/examples/
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ROBUSTLAB_DATA_DIR=/data ROBUSTLAB_DEVICE=cuda
WORKDIR /app
VOLUME ["/data"]
USER robustlab
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["robustlab"]
CMD ["worker"]

# --- cpu runtime: last, so that a plain `docker build .` gives it -------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin robustlab \
    && mkdir -p /data && chown robustlab:robustlab /data
COPY --from=cpu-build /opt/venv /opt/venv
COPY examples/ /app/examples/
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ROBUSTLAB_DATA_DIR=/data
WORKDIR /app
VOLUME ["/data"]
USER robustlab
EXPOSE 8000
# For the API; workers serve no HTTP, docker-compose.yml switches the check off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
ENTRYPOINT ["robustlab"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
