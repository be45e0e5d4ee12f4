# The control-plane image: `tuneops validate | plan | apply | render` and, once it lands, the
# reconcile daemon. No torch: it renders Jobs and reads MLflow over its REST API.
#
#   docker build -f deploy/control-plane.Dockerfile -t registry.example.internal/ml/tuneops:0.1.0 .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY reconciler /src/reconciler
COPY templates /src/templates
RUN pip install "/src[kubernetes,daemon]" && rm -rf /src

RUN useradd --create-home --uid 1000 tuneops
USER 1000
WORKDIR /home/tuneops
ENTRYPOINT ["tuneops"]
