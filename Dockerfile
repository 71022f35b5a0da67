# One image for every cachewarm process of the docker-compose stack: the demo source, the Celery worker
# (which serves metrics on 9808) and beat. Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a separate directory so that the processes import the installed package, not a source tree.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cachewarm ./cachewarm
RUN pip install . && rm -rf /src

WORKDIR /app
COPY deploy/cachewarm.toml /app/deploy/cachewarm.toml
ENV CACHEWARM_CONFIG=/app/deploy/cachewarm.toml

RUN useradd --system --no-create-home --uid 10001 cachewarm
USER cachewarm

EXPOSE 8000 9808
CMD ["cachewarm", "run"]
