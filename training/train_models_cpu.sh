#!/usr/bin/env bash
# The commands that trained the models under models/ on torchvision's ImageNet VGG16: one
# `training.fit` run after another on this project's 2-core CPU (AVX512-BF16: bfloat16 mixed
# precision, picked by --precision auto), each for a fixed number of minutes with a cosine
# learning rate over that time (`--minutes`). The block3_conv3 default gets most of the budget.
#
#   bash training/train_models_cpu.sh [DATA] [OUT] [TIME_SCALE] [extra fit args...]
#
# DATA defaults to ../shared/photos/train; validation is a hash split of it, so the held-out
# photos stay unseen. Fresh random crops every epoch (--no-cache), encoder inside the step.
# Each run's log lies beside its folder; an interrupted run continues with
# `python -m training.fit --resume --out OUT/NAME`.
set -uo pipefail
data=${1:-../shared/photos/train}
out=${2:-runs/models}
scale=${3:-1}
shift $(($# < 3 ? $# : 3))
extra=("$@")
mkdir -p "$out"
minutes() { awk -v m="$1" -v s="$scale" 'BEGIN { print m * s }'; }

common=(--data "$data" --encoder-weights imagenet-torchvision --precision auto --crop-size 128
        --crops-per-image 8 --batch-size 16 --lr 1e-3 --no-cache --epochs 100000 --verbose 0)
fit() {  # fit NAME MINUTES [args...]
    local name=$1 mins=$2
    shift 2
    "${PYTHON:-python3}" -m training.fit "${common[@]}" --out "$out/$name" --minutes "$(minutes "$mins")" "$@" \
        "${extra[@]}" > "$out/$name.log" 2>&1
    echo "$name: exit $?"
}

layers=${LAYERS:-block3_conv3 block1_conv2 block2_conv2 block4_conv3 block5_conv3}  # a subset: LAYERS="..."
declare -A budget=([block3_conv3]=100 [block1_conv2]=4 [block2_conv2]=5 [block4_conv3]=6 [block5_conv3]=6)
for layer in $layers; do
    fit "vgg16-$layer" "${budget[$layer]}" --layer "$layer"
done
