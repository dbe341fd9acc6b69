#!/usr/bin/env bash
# Every run behind docs/results.md, one section at a time; then `compress report` builds
# the page from OUT. CIFAR-10 comes from DATA (a directory of .npz shards, or
# torchvision's files; with the internet, any empty directory: it is downloaded there).
#
#   bench/results.sh DATA OUT PROTOCOL [SECTION ...]
#
# PROTOCOL: `gpu` is the full protocol of each section (the seed's 30 epochs on all of
# CIFAR-10, the paper's recipe, 10-epoch study trials); `cpu` is the reduced one this
# repository's CPU numbers use (the first 10,000 or 5,000 training images, 2,000 or 1,000
# test images, 2-5 epochs: see the case below), labelled as such on the page; `smoke` only
# checks the pipeline. SECTION: quantize distill seed paper study
# (default: all, in that order). Each run's directory lands under OUT as it finishes.
set -euo pipefail
data=${1:?usage: bench/results.sh DATA OUT gpu|cpu [SECTION ...]}
out=${2:?usage: bench/results.sh DATA OUT gpu|cpu [SECTION ...]}
protocol=${3:?usage: bench/results.sh DATA OUT gpu|cpu [SECTION ...]}
shift 3
sections=${*:-quantize distill seed paper study}
compress=${COMPRESS:-compress}

# Each section's data and length: the first N training and test images (none: all of
# CIFAR-10) and its epochs. The CPU protocol is sized to a few hours of a 2-core machine.
case $protocol in
  gpu) small=(); tiny=(); kd_epochs=10; seed_epochs=30; paper_epochs=30; trial_epochs=10
       trials=60 ;;
  cpu) small=(--train-size 10000 --test-size 2000); tiny=(--train-size 5000 --test-size 1000)
       kd_epochs=5; seed_epochs=5; paper_epochs=2; trial_epochs=2; trials=40 ;;
  smoke) small=(--train-size 256 --test-size 128); tiny=("${small[@]}"); kd_epochs=1
       seed_epochs=1; paper_epochs=1; trial_epochs=1; trials=4 ;;  # checks the pipeline only
  *) echo "PROTOCOL must be gpu, cpu or smoke, got $protocol" >&2; exit 2 ;;
esac
cifar=(--dataset cifar10 --data-dir "$data")
# The KD and QAT tables' recipe (Adam 1e-3, batch 128): the student, the quantized
# networks and the ResNet-56 teacher share the cache under OUT/studies/cache.
recipe=("${cifar[@]}" "${small[@]}" --epochs "$kd_epochs")

for section in $sections; do
  case $section in
    quantize)  # issue 10's before/after: w2a4 and w1a1 ResNet-20, QAT from scratch
      for bits in "2 4" "1 1"; do
        set -- $bits
        "$compress" run quantize --model resnet20 --weight-bits "$1" --act-bits "$2" \
          "${recipe[@]}" --out "$out/quantize" --cache "$out/studies/cache"
      done ;;
    distill)  # the student alone (the study's backbone) and three kinds of KD from ResNet-56
      "$compress" run baseline --model resnet20 "${recipe[@]}" --out "$out/distill" \
        --cache "$out/studies/cache"
      for kind in output feature attention; do
        "$compress" run distill --model resnet20 --teacher resnet56 --kind "$kind" \
          "${recipe[@]}" --out "$out/distill" --cache "$out/studies/cache"
      done ;;
    seed)  # the seed experiment, and GhostNet's CIFAR variant with the same protocol
      "$compress" reproduce seed "${cifar[@]}" "${small[@]}" --epochs "$seed_epochs" --out "$out/seed"
      "$compress" run ghost --cifar-strides --preset seed "${cifar[@]}" "${small[@]}" \
        --epochs "$seed_epochs" --out "$out/seed/runs" ;;
    paper)  # Tables 3-4: VGG-16 over s at d = 3, ResNet-56 at s = 2, d = 3
      "$compress" study ablation --backbone vgg16 --s 2,3,4,5 --d 3 --preset paper \
        "${cifar[@]}" "${tiny[@]}" --epochs "$paper_epochs" --out "$out/paper"
      "$compress" study ablation --backbone resnet56 --s 2 --d 3 --preset paper \
        "${cifar[@]}" "${tiny[@]}" --epochs "$paper_epochs" --out "$out/paper" ;;
    study)  # the cross-technique Pareto front on ResNet-20
      "$compress" study pareto --backbone resnet20 --trials "$trials" --sampler-seed 0 \
        --techniques ghost,prune,quantize,distill,ghost+prune,prune+quantize,ghost+quantize \
        --objectives accuracy,macs,params \
        --baselines ghostnet,mobilenetv3_large,mobilenetv3_small,timm:mobilenetv3_small_050,timm:lcnet_050 \
        --workers "${WORKERS:-1}" --study-name "pareto-$protocol" "${cifar[@]}" "${tiny[@]}" --epochs "$trial_epochs" \
        --out "$out/studies" ;;
    *) echo "unknown section $section" >&2; exit 2 ;;
  esac
done
