# One image for every role: the Ray head, the Ray workers and the API
# (docker-compose.yml picks the role by command: deploy/ray-head.sh,
# deploy/ray-worker.sh, deploy/api.sh).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY common common
COPY worker worker
COPY service service
COPY deploy deploy

# EXTRAS=gloo adds torch for the "ray" all-reduce backend (a large download);
# the default image has the "mpi" backend (mpi4py on the mpich wheel).
ARG EXTRAS=""
# The project's own pins (mpich, ray, torch) are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

ENV RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1
CMD ["deploy/api.sh"]
