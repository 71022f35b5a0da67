# One image for every cachewarm process of the docker-compose stack: the demo source, the Celery worker
# (which serves metrics on 9808) and beat. Build context: the repository root.
FROM python:3.11-slim

# The package and its dependencies go into /opt/cachewarm at exactly the versions requirements-lock.txt pins, each
# checked against its hashes (the lock constrains the resolution; the build uses the locked setuptools). uv itself
# comes from the package index pinned by hash, and leaves the image once it has installed.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    VIRTUAL_ENV=/opt/cachewarm \
    PATH=/opt/cachewarm/bin:$PATH

# Install from a separate directory so that the processes import the installed package, not a source tree.
WORKDIR /src
COPY tools/uv-requirements.txt ./tools/
RUN pip install --require-hashes -r tools/uv-requirements.txt
COPY pyproject.toml requirements-lock.txt README.md ./
COPY cachewarm ./cachewarm
RUN uv venv --python "$(command -v python3)" /opt/cachewarm \
    && uv pip install --compile-bytecode --constraints requirements-lock.txt \
        --require-build-hashes --build-constraints requirements-lock.txt . \
    && pip uninstall -y uv && rm -rf /src

WORKDIR /app
COPY deploy/cachewarm.toml /app/deploy/cachewarm.toml
ENV CACHEWARM_CONFIG=/app/deploy/cachewarm.toml

# The processes run as cachewarm, whose home (/var/lib/cachewarm) is the one directory they write: beat's schedule
# (docker-compose.yml mounts a volume there). /app stays root's.
RUN useradd --system --uid 10001 --home-dir /var/lib/cachewarm --create-home cachewarm
USER cachewarm

EXPOSE 8000 9808
CMD ["cachewarm", "run"]
