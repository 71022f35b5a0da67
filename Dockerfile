# One image for every cachewarm process of the docker-compose stack: the demo source, the Celery worker
# (which serves metrics on 9808) and beat. Build context: the repository root.
FROM python:3.11-slim

# The package and its dependencies go into /opt/cachewarm, exactly as uv.lock pins them (versions and hashes);
# uv itself comes from PyPI pinned by hash, and leaves the image once it has installed.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/cachewarm \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    PATH=/opt/cachewarm/bin:$PATH

# Install from a separate directory so that the processes import the installed package, not a source tree.
WORKDIR /src
COPY tools/uv-requirements.txt ./tools/
RUN pip install --require-hashes -r tools/uv-requirements.txt
COPY pyproject.toml uv.lock README.md ./
COPY cachewarm ./cachewarm
RUN uv sync --locked --no-dev --no-editable --compile-bytecode \
    && pip uninstall -y uv && rm -rf /src

WORKDIR /app
COPY deploy/cachewarm.toml /app/deploy/cachewarm.toml
ENV CACHEWARM_CONFIG=/app/deploy/cachewarm.toml

RUN useradd --system --no-create-home --uid 10001 cachewarm
USER cachewarm

EXPOSE 8000 9808
CMD ["cachewarm", "run"]
