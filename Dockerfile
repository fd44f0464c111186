# jettag on a CUDA PyTorch base. Build (from the repository root):  docker build -t jettag .
# Run on all GPUs, the data mounted at /data, the runs written to ./outputs:
#   docker run --gpus all --shm-size=8g -v /path/to/JetClass:/data -v $PWD/outputs:/work/outputs jettag \
#     experiment=jetclass_part trainer=ddp data.train_files='[/data/train_100M/*.root]' \
#     data.val_files='[/data/val_5M/*.root]' data.test_files='[/data/test_20M/*.root]'
# Other commands: docker run --entrypoint jettag-report -v $PWD/outputs:/work/outputs jettag outputs/
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 MPLBACKEND=Agg
WORKDIR /opt/jettag
COPY pyproject.toml README.md ./
COPY jettag ./jettag
COPY configs ./configs
COPY scripts ./scripts
COPY tests ./tests
# The README's set-up command, less its CPU torch: the base image's CUDA build of torch is kept.
# (tests/test_docker.py checks that these are the README's install steps.)
RUN pip install --prefer-binary -e ".[gen,test]"

WORKDIR /work
ENTRYPOINT ["jettag-train"]
