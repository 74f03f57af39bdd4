#!/usr/bin/env bash
# The commands that trained models/vgg16-block{1,2,3}_conv* on one GPU (an H200, KERAS_BACKEND=jax)
# on torchvision's ImageNet VGG16: two processes share the card, block3_conv3 (the default) in one,
# block1_conv2 then block2_conv2 in the other; each run is far too small to fill a GPU alone, and
# what limits them is the CPU threads cutting crops (--workers). Each trains for a fixed number of
# minutes (times TIME_SCALE) with a cosine learning rate over that time (`--minutes`).
#
#   KERAS_BACKEND=jax bash training/train_models.sh [DATA] [OUT] [TIME_SCALE] [extra fit args...]
#
# DATA defaults to ../shared/photos/train (on a machine without it, the folder that
# `python -m training.gpu_bundle pack` writes); validation is a hash split of it, so the held-out
# photos stay unseen. Each run's log lies beside its folder. The CPU recipe is
# training/train_models_cpu.sh; the hed-bsds500 models before it came from this file at 175e235.
set -uo pipefail
data=${1:-../shared/photos/train}
out=${2:-runs/gpu}
scale=${3:-1}
shift $(($# < 3 ? $# : 3))
extra=("$@")
mkdir -p "$out"
minutes() { awk -v m="$1" -v s="$scale" 'BEGIN { print m * s }'; }
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.3}  # room for both processes

common=(--data "$data" --encoder-weights imagenet-torchvision --precision mixed_bfloat16 --crop-size 128
        --crops-per-image 64 --batch-size 32 --lr 1e-3 --no-cache --epochs 100000 --verbose 0)
fit() {  # fit NAME MINUTES WORKERS [args...]
    local name=$1 mins=$2 workers=$3
    shift 3
    "${PYTHON:-python3}" -m training.fit "${common[@]}" --out "$out/$name" --minutes "$(minutes "$mins")" \
        --workers "$workers" "$@" "${extra[@]}" > "$out/$name.log" 2>&1
    echo "$name: exit $?"
}

fit vgg16-block3_conv3 7 10 &
{ fit vgg16-block1_conv2 3 5 --layer block1_conv2; fit vgg16-block2_conv2 3.5 5 --layer block2_conv2; } &
wait
