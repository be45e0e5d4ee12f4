# The trainer image: what every Job runs (`python -m reconciler run KIND --job ...`, under
# torchrun for several GPUs). Set it as kubernetes.image in tuneops.yaml.
#
#   docker build -f deploy/trainer.Dockerfile -t registry.example.internal/ml/tuneops-trainer:0.1.0 .
#
# The base image brings CUDA and a torch build for it; pip keeps that torch (the project only
# asks for torch>=2.3) and adds transformers, peft, trl, DeepSpeed and MLflow.
FROM pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/mnt/tuneops/hf-cache \
    TOKENIZERS_PARALLELISM=false

RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY reconciler /src/reconciler
COPY templates /src/templates
RUN pip install "/src[train,eval]" && rm -rf /src

# Jobs run as an unprivileged user; the storage claim must be writable by its group.
RUN useradd --create-home --uid 1000 --gid 0 tuneops
USER 1000
WORKDIR /home/tuneops
