# One image for every role of the stack: `queuebench serve` (the default command),
# `queuebench worker`, `queuebench scheduler`, `queuebench db upgrade`, and Flower for
# Celery. Each queue library lives in its own environment (arq caps redis-py below 6,
# kombu needs 6.1 or newer), so the image holds one backend, chosen at build time:
#
#   docker build --build-arg BACKEND=celery -t queuebench:celery .
#
# BACKEND is the pyproject.toml extra installed (celery, arq, dramatiq or taskiq) and the
# image's QUEUE_BACKEND; docker-compose.yml builds it from QUEUE_BACKEND in .env.
FROM python:3.11-slim

ARG BACKEND=arq
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUEUE_BACKEND=${BACKEND}

RUN groupadd --system --gid 10001 queuebench \
    && useradd --system --uid 10001 --gid queuebench --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin queuebench

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY backends ./backends
COPY bench ./bench
RUN case "$BACKEND" in \
        celery|arq|dramatiq|taskiq) ;; \
        *) echo "BACKEND must be celery, arq, dramatiq or taskiq, not '$BACKEND'" >&2; exit 1 ;; \
    esac \
    && pip install ".[${BACKEND}]" \
    && chown queuebench:queuebench /app

# The API's port; the default SQLite database (without DATABASE_URL) is written to /app.
USER queuebench
EXPOSE 8000
# The API's check; docker-compose.yml gives workers and the scheduler their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "core.cli.probe", "api", "--url", "http://127.0.0.1:8000"]
CMD ["queuebench", "serve", "--host", "0.0.0.0", "--port", "8000"]
