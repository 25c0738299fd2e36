# One image for every command of resoto-workflows: resotocore, resotoworker, resotometrics, resotoctl.
# docker-compose.yml builds it once and chooses the command per service; alone:
#   docker build -t resoto-workflows . && docker run --rm resoto-workflows resotoctl --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY resotolib ./resotolib
COPY resotocore ./resotocore
COPY resotoworker ./resotoworker
COPY resotometrics ./resotometrics
COPY resotoctl ./resotoctl
RUN pip install .

# Run as a user of its own; /data holds the state of the embedded store and of the example cloud.
RUN useradd --create-home --uid 1000 resoto \
    && mkdir -p /data/core /data/worker \
    && chown -R resoto:resoto /data
USER resoto
WORKDIR /data
ENV RESOTOCORE_DATA_DIR=/data/core \
    RESOTOWORKER_DATA_DIR=/data/worker

EXPOSE 8900 9955
CMD ["resotocore"]
