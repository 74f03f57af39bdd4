#!/usr/bin/env bash
# Per-layer decoders for AlexNet and EfficientNet-Lite0 with the bundled VGG16 models' recipe
# (train_models_cpu.sh: 128 px crops, batches of 16, the 48-wide pixel-shuffle decoder with 7 residual
# blocks, a cosine learning rate over a fixed time), one `training.fit` run after another, each
# scored on the held-out photos by `training.evaluate` into its folder. Strides 4, 8 and 16 of each
# network are the ones the demo's "same stride, different network" comparison lines up with VGG16's.
#
#   bash training/train_backbones.sh [DATA] [HELD_OUT] [OUT] [MINUTES_PER_LAYER] [extra fit args...]
#
# DATA defaults to ../shared/photos/train (validation: a hash split of it), HELD_OUT to
# ../shared/photos/holdout. A decoder is worth bundling only once its held-out curve has flattened
# (benchmarks/snapshot_curve.py on copies of its backups, as for VGG16): a few minutes are not enough.
# LAYERS="alexnet:conv1 ..." picks a subset. An interrupted run continues with
# `python -m training.fit --resume --out OUT/NAME`.
set -uo pipefail
data=${1:-../shared/photos/train}
held_out=${2:-../shared/photos/holdout}
out=${3:-runs/backbones}
minutes=${4:-60}
shift $(($# < 4 ? $# : 4))
extra=("$@")
mkdir -p "$out"

layers=${LAYERS:-alexnet:conv1 alexnet:conv2 alexnet:conv5 efficientnet_lite0:block2 efficientnet_lite0:block3 \
efficientnet_lite0:block5 alexnet:conv3 alexnet:conv4}
for entry in $layers; do
    backbone=${entry%%:*} layer=${entry#*:} name="${entry%%:*}-${entry#*:}"
    "${PYTHON:-python3}" -m training.fit --backbone "$backbone" --layer "$layer" --data "$data" --out "$out/$name" \
        --precision auto --crop-size 128 --crops-per-image 8 --batch-size 16 --lr 1e-3 --minutes "$minutes" \
        --verbose 0 "${extra[@]}" > "$out/$name.log" 2>&1
    echo "$name: fit exit $?"
    "${PYTHON:-python3}" -m training.evaluate --model "$out/$name" --data "$held_out" >> "$out/$name.log" 2>&1
    echo "$name: evaluate exit $?"
done
