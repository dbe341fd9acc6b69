#!/usr/bin/env bash
# The GPU checks of one lent session, in one go: CUDA tests, training throughput at 32px
# and 224px with each engine variant, CUDA profile, a short seed-protocol run, the
# depthwise weight-gradient formulations, and a study's trials per hour one by one,
# packed (--concurrent 4) and as 4 processes.
# Usage (device machine, repo root): bash bench/gpu_check.sh DATA_DIR OUT_DIR
set -uo pipefail
data=${1:-.data/cifar10}
out=${2:-gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=python3
if [ -d .whl ]; then  # packages the device image lacks, carried as wheels
  $py -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
fi
step() { echo "=== $*"; "$@" || echo "=== FAILED ($?): $*"; }
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
  step $py -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_turns.py
  step $py bench/train_throughput.py --data "$data" --size 32 --steps 50 --device cuda \
    --variants default,eager,graph+amp+cl,compile
  step $py bench/train_throughput.py --data "$data" --size 224 --steps 20 --device cuda \
    --variants default,eager
  step $py -m compress.cli profile ghostnet mobilenetv3_large mobilenetv3_small resnet56 \
    --device cuda --repeats 30
  step $py bench/cpu_backward.py --device cuda --batch 128 --size 32 --repeats 20
  for backbone in resnet20 "ghostnet --cifar-strides"; do
    # shellcheck disable=SC2086  # the backbone's own flag
    step $py bench/study_throughput.py --data-dir "$data" --device cuda --trials 16 \
      --epochs 2 --concurrent 4 --backbone $backbone
  done
  for model in ghostnet mobilenetv3_large; do
    step $py -m compress.cli run baseline --model "$model" --preset seed --epochs 3 \
      --dataset cifar10 --data-dir "$data" --out "$out/runs" --json
  done
} 2>&1 | tee "$out/log.txt"
