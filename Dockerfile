# syntax=docker/dockerfile:1
# Images of the recommendation service (the default target, `runtime`) and of the trainer (`trainer`).
#
#   docker build -t recsys-service .                    # serve extra only: no torch in the image
#   docker build -t recsys-trainer --target trainer .   # export extra (torch 2.13.0 CPU) for the training Job
#
# Stages: `base` (python, env, non-root user) -> `builder` (wheel + venv with .[serve]) -> `runtime`
# (copies that venv); `trainer` is built from `base` with the same wheel and the export extra.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 recsys \
 && useradd --system --uid 10001 --gid recsys --create-home --home-dir /home/recsys \
      --shell /usr/sbin/nologin recsys
WORKDIR /app

# ---- builder: the project wheel, and a venv with the serve extra ---------------------------------
FROM base AS builder
RUN python -m venv /opt/venv && pip install --upgrade "pip>=25.1"
COPY pyproject.toml README.md ./
COPY core core
COPY training training
COPY exporter exporter
COPY service service
RUN pip wheel . --no-deps --wheel-dir /wheels
RUN set -- /wheels/alphafuse_recsys-*.whl && pip install "$1[serve]"

# ---- trainer: `recsys train` / `recsys export` for k8s/training-job.yaml --------------------------
# torch comes from the CPU index first (the PyPI wheel pulls GBs of CUDA); 2.13.0+cpu satisfies ==2.13.0.
FROM base AS trainer
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=builder /wheels /wheels
RUN python -m venv /opt/venv \
 && pip install --upgrade "pip>=25.1" \
 && pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0" \
 && set -- /wheels/alphafuse_recsys-*.whl && pip install "$1[export]" \
 && rm -rf /wheels
COPY training/configs /app/configs
# caches of text embeddings and Hugging Face files; the Job mounts an emptyDir here
RUN mkdir -p /cache && chown recsys:recsys /cache
ENV RECSYS_CACHE_DIR=/cache \
    HF_HOME=/cache/huggingface
USER 10001:10001
ENTRYPOINT ["recsys"]
CMD ["--help"]

# ---- runtime: the service image (last stage, so the default target) -------------------------------
FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
# the serve extra must not pull torch: fail the build if it is importable
RUN python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torch') is not None)"
ENV OMP_NUM_THREADS=1 \
    RECSYS_THREADS=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--workers", "1"]
