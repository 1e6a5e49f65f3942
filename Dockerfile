# CPU image. GPU hosts: start from a CUDA base, install torch for CUDA, then `pip install -e '.[gpu]'`.
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 VITRINE_HOST=0.0.0.0 VITRINE_DATA_DIR=/data
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY search search
COPY api api
COPY indexer indexer
COPY migrations migrations
COPY handler.py alembic.ini ./
RUN pip install -e '.[cpu]'
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["python", "-m", "api"]
