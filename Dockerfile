# CPU image (docker compose --profile cpu up). The CUDA image is Dockerfile.cuda.
# Weights are not baked in: mount a folder at /models (VITRINE_MODEL=/models/siglip2-base-patch16-512)
# or let the hub cache fill /models/hf-cache on first start.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 VITRINE_HOST=0.0.0.0 VITRINE_DATA_DIR=/data HF_HOME=/models/hf-cache
# The CPU wheel first: the pinned torch from PyPI would pull the multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY search search
COPY api api
COPY indexer indexer
COPY migrations migrations
COPY handler.py alembic.ini ./
RUN pip install '.[cpu,postgres]'
# Exports (ONNX/OpenVINO conversions) live in VITRINE_CACHE_DIR, keyed by the checkpoint's content:
# mount a volume there to keep them across containers. To build the export into the image instead, name
# a checkpoint the build can read: a hub id, or a folder copied into the image before this step
#   docker build --build-arg EXPORT_MODEL=google/siglip2-base-patch16-512 .
# (a mounted checkpoint: `docker run -v ...:/models -v vitrine-cache:/cache IMAGE python -m indexer
# export-model` once, with the same VITRINE_MODEL the server uses).
ENV VITRINE_CACHE_DIR=/cache
ARG EXPORT_MODEL=
RUN if [ -n "$EXPORT_MODEL" ]; then \
        VITRINE_MODEL="$EXPORT_MODEL" VITRINE_DEVICE=cpu python -m indexer export-model; \
    fi
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["python", "-m", "api"]
