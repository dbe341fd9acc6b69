#!/usr/bin/env bash
# The comparison from trained networks (docs/results.md, first section): the published
# CIFAR-10 ResNet-20 and ResNet-56 (MODELS: a folder with resnet20-12fca82f.th and
# resnet56-4bfd9763.th, as in ../shared/models/cifar10-resnet/) compressed on all of
# CIFAR-10 (DATA: the .npz shards), each fine-tune at most one pass over the 50,000
# training images. One row, one run directory under OUT/trained/ROW/; a row whose run
# completed, here or in an earlier session (its summary is committed in
# docs/results/runs/trained/), is skipped, so running the script again finishes what is
# left. Then: compress report docs/results OUT/trained OUT/trained-study --keep trained,...
#
#   bench/trained.sh DATA MODELS OUT [ROW ...]     (default: every row, in the order below)
#
# Every fine-tune uses one recipe: SGD (momentum 0.9, weight decay 1e-4), lr 0.01 falling
# to 0 on a cosine over one epoch, batch 128, random crop and flip; networks are fed
# ImageNet's normalisation, which the published weights were trained with.
set -euo pipefail
data=${1:?usage: bench/trained.sh DATA MODELS OUT [ROW ...]}
models=${2:?usage: bench/trained.sh DATA MODELS OUT [ROW ...]}
out=${3:?usage: bench/trained.sh DATA MODELS OUT [ROW ...]}
shift 3
compress=${COMPRESS:-compress}
r20=$models/resnet20-12fca82f.th
r56=$models/resnet56-4bfd9763.th
cifar=(--dataset cifar10 --data-dir "$data" --normalize imagenet)
tune=(--optimizer sgd --lr 0.01 --momentum 0.9 --weight-decay 1e-4 --schedule cosine
      --batch-size 128)
once=("${cifar[@]}" "${tune[@]}" --epochs 1)       # the network trained for one epoch
after=("${cifar[@]}" "${tune[@]}" --epochs 0)      # only post-training techniques run
prune_tune=(--finetune-epochs 1 --finetune-lr 0.01)
teacher=(--teacher "$r56" --teacher-model resnet56)

rows=(
  r20-loaded r56-loaded r20-finetuned r56-finetuned
  r20-ptq8 r56-ptq8 r20-w4a4 r20-w2a4 r20-w2a4-kd r56-w4a4 r56-w2a4 r20-w1a1
  r56-weights50 r56-weights90
  r56-channels70 r56-channels50 r56-channels30
  r20-channels50-pruned r20-channels50-tuned r20-channels50-kd
  r56-channels50-w4a4
  ghost-r56-fitted ghost-r56-fitted-kd ghost-r56-scratch ghost-r56-scratch-lr0.1
  study ghost-r56-fitted-5ep ghost-r56-scratch-5ep latency
)
trials=${TRIALS:-24}

committed=$(dirname "$0")/../docs/results/runs/trained

completed() {  # whether row $2's run under $1 completed, or its summary is committed
  grep -qs '"status": "completed"' "$1"/*/metrics.json ||
    grep -qs "^  \"name\": \"$2\"," "$committed"/*.json
}

row() {
  local name=$1
  shift
  local dir=$out/trained/$name
  if completed "$dir" "$name"; then
    echo "== $name: done"
    return
  fi
  rm -rf "$dir"
  echo "== $name: $*"
  "$compress" run "$@" --out "$dir"
}

run_dir() {  # the completed run of row $1
  dirname "$(grep -ls '"status": "completed"' "$out/trained/$1"/*/metrics.json | head -1)"
}

run_row() {
  case $1 in
    r20-loaded) row "$1" baseline --model resnet20 --init "$r20" "${after[@]}" ;;
    r56-loaded) row "$1" baseline --model resnet56 --init "$r56" "${after[@]}" ;;
    r20-finetuned) row "$1" baseline --model resnet20 --init "$r20" "${once[@]}" ;;
    r56-finetuned) row "$1" baseline --model resnet56 --init "$r56" "${once[@]}" ;;
    r20-ptq8) row "$1" quantize --model resnet20 --init "$r20" --mode ptq --weight-bits 8 \
      --act-bits 8 "${after[@]}" ;;
    r56-ptq8) row "$1" quantize --model resnet56 --init "$r56" --mode ptq --weight-bits 8 \
      --act-bits 8 "${after[@]}" ;;
    r20-w4a4) row "$1" quantize --model resnet20 --init "$r20" --weight-bits 4 --act-bits 4 \
      "${once[@]}" ;;
    r20-w2a4) row "$1" quantize --model resnet20 --init "$r20" --weight-bits 2 --act-bits 4 \
      "${once[@]}" ;;
    r20-w2a4-kd) row "$1" quantize+distill --model resnet20 --init "$r20" --weight-bits 2 \
      --act-bits 4 "${teacher[@]}" "${once[@]}" ;;
    r20-w1a1) row "$1" quantize --model resnet20 --init "$r20" --weight-bits 1 --act-bits 1 \
      "${once[@]}" ;;
    r56-w4a4) row "$1" quantize --model resnet56 --init "$r56" --weight-bits 4 --act-bits 4 \
      "${once[@]}" ;;
    r56-w2a4) row "$1" quantize --model resnet56 --init "$r56" --weight-bits 2 --act-bits 4 \
      "${once[@]}" ;;
    r56-weights50) row "$1" prune --model resnet56 --init "$r56" --method weights --ratio 0.5 \
      "${prune_tune[@]}" "${after[@]}" ;;
    r56-weights90) row "$1" prune --model resnet56 --init "$r56" --method weights --ratio 0.9 \
      "${prune_tune[@]}" "${after[@]}" ;;
    r56-channels70|r56-channels50|r56-channels30)
      row "$1" prune --model resnet56 --init "$r56" --target-macs "0.${1: -2:1}" \
        "${prune_tune[@]}" "${after[@]}" ;;
    r20-channels50-pruned)  # pruned, not fine-tuned: the start of the next two rows
      row "$1" prune --model resnet20 --init "$r20" --target-macs 0.5 --finetune-epochs 0 \
        "${after[@]}" ;;
    r20-channels50-tuned) row "$1" baseline --model resnet20 \
      --init "$(run_dir r20-channels50-pruned)" "${once[@]}" ;;
    r20-channels50-kd) row "$1" distill --model resnet20 \
      --init "$(run_dir r20-channels50-pruned)" "${teacher[@]}" "${once[@]}" ;;
    r56-channels50-w4a4)  # Deep Compression's order: prune and fine-tune, then quantize
      row "$1" prune+quantize --model resnet56 --init "$r56" --target-macs 0.5 \
        "${prune_tune[@]}" --mode finetune --weight-bits 4 --act-bits 4 --qat-epochs 1 \
        --qat-lr 0.01 "${after[@]}" ;;
    ghost-r56-fitted)  # the trained ResNet-56's convs made Ghost modules, then fine-tuned
      row "$1" ghost --backbone resnet56 --s 2 --d 3 --init "$r56" "${once[@]}" ;;
    ghost-r56-fitted-kd) row "$1" ghost+distill --backbone resnet56 --s 2 --d 3 \
      --init "$r56" "${teacher[@]}" "${once[@]}" ;;
    ghost-r56-scratch)  # the same network and images from random weights, the same recipe
      row "$1" ghost --backbone resnet56 --s 2 --d 3 "${once[@]}" ;;
    ghost-r56-scratch-lr0.1)  # ... and at the paper's learning rate, kinder to scratch
      row "$1" ghost --backbone resnet56 --s 2 --d 3 "${once[@]}" --lr 0.1 ;;
    ghost-r56-fitted-5ep|ghost-r56-scratch-5ep)  # one pass leaves both far from trained:
      # does the fitted start still lead after five? (the one row set that needs more)
      local start=()
      [ "$1" = ghost-r56-fitted-5ep ] && start=(--init "$r56")
      row "$1" ghost --backbone resnet56 --s 2 --d 3 "${start[@]}" "${once[@]}" --epochs 5 ;;
    study)  # the Pareto study: every trial fine-tunes the trained ResNet-20 for one pass
      # over the first STUDY_IMAGES (10,000) training images, a fifth of the rows' epoch:
      # 24 trials of the rows' epoch (QAT trials 13-20 min each) would take a day here
      local study=$out/trained-study
      local done=0
      if [ -f "$study/pareto-trained/trials.json" ]; then
        done=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" \
          "$study/pareto-trained/trials.json")
      fi
      if [ "$done" -ge "$trials" ]; then
        echo "== study: done ($done trials)"
        return
      fi
      echo "== study: $((trials - done)) trials to go"
      "$compress" study pareto --backbone resnet20 --init "$r20" "${once[@]}" \
        --train-size "${STUDY_IMAGES:-10000}" \
        --techniques ghost,prune,quantize,distill,ghost+prune,ghost+quantize \
        --fix "finetune_epochs=1,finetune_lr=0.01,mode=qat,teacher=$r56,teacher_model=resnet56" \
        --objectives accuracy,macs,params --baselines "" --sampler-seed 0 \
        --trials "$((trials - done))" --study-name pareto-trained --out "$study" ;;
    latency)  # every completed row as ONNX, checked on the test set and timed in ONNX
      # Runtime (batch 1, one thread): best on an otherwise idle machine, so it runs last
      local metrics
      for metrics in "$out"/trained/*/*/metrics.json; do
        grep -qs '"status": "completed"' "$metrics" || continue
        grep -qs '"exports"' "$metrics" && continue
        echo "== latency: $(dirname "$metrics")"
        "$compress" export "$(dirname "$metrics")" --threads 1 --repeats 50 ||
          echo "== latency: no ONNX form (a 1-bit network), left out"
      done ;;
    *) echo "unknown row $1 (rows: ${rows[*]})" >&2; exit 2 ;;
  esac
}

for name in "${@:-${rows[@]}}"; do
  run_row "$name"
done
