# cnnlab's triage service and clinician page in one image (CPU by default).
#
#   docker build -t cnnlab .                                   # CPU
#   docker build -t cnnlab-cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# The CUDA variant differs only in the torch wheels: they carry their own CUDA runtime, so the
# same slim base works; the host needs the NVIDIA driver and container toolkit (compose.yaml's
# `gpus` line), and `cnnlab serve --device auto` then picks the GPU.
# compose.yaml runs it as the API (`cnnlab serve`) and as the page (`cnnlab ui`) beside
# PostgreSQL; tests/test_containers.py checks that every command and flag here exists.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# torch first, from the index that decides CPU or CUDA; cnnlab's own install then finds it satisfied.
RUN pip install --index-url "${TORCH_INDEX}" "torch>=2.10" "torchvision>=0.25"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[serve,postgres,ui]"

# A non-root user owns the state volume (the database file when SQLite, kept images, keys).
RUN useradd --create-home --uid 10001 cnnlab && mkdir -p /state /models && chown cnnlab /state
USER cnnlab
VOLUME ["/state"]
EXPOSE 8000 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]

ENTRYPOINT ["cnnlab"]
# The database URL (with its password) comes from CNNLAB_SERVE_DB_URL, never the command line.
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8000", "--state-dir", "/state"]
