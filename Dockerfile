# jettag on a CUDA PyTorch base. Build:  docker build -t jettag .
# Run (GPUs, data mounted at /data, runs written to ./outputs):
#   docker run --gpus all -v /path/to/JetClass:/data -v $PWD/outputs:/work/outputs jettag \
#     experiment=jetclass_part data.train_files='[/data/train_100M/*.root]' \
#     data.val_files='[/data/val_5M/*.root]' data.test_files='[/data/test_20M/*.root]'
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg
WORKDIR /opt/jettag
COPY pyproject.toml README.md ./
COPY jettag ./jettag
COPY configs ./configs
COPY scripts ./scripts
# Same install as the README's set-up command; torch comes from the base image (CUDA build).
RUN pip install --prefer-binary -e ".[gen]"

WORKDIR /work
ENTRYPOINT ["jettag-train"]
