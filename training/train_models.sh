#!/usr/bin/env bash
# The commands that trained the models under models/: the block3_conv3 default, two decoder
# variants at the same layer, and the per-layer models, as five concurrent `training.fit` runs
# sharing one GPU (each run is far too small to fill it alone).
#
#   KERAS_BACKEND=jax bash training/train_models.sh [DATA] [OUT] [TIME_SCALE] [extra fit args...]
#
# DATA defaults to ../shared/photos/train; validation is a hash split of it, so the held-out photos
# stay unseen. Each run trains for a fixed number of minutes (times TIME_SCALE) with a cosine
# learning rate over that time (`--minutes`), so the recipe fits any machine; the logs say how
# many images each run saw. Extra arguments go to every run (e.g. --limit 8 for a smoke test).
set -uo pipefail
data=${1:-../shared/photos/train}
out=${2:-runs/models}
scale=${3:-1}
shift $(($# < 3 ? $# : 3))
mkdir -p "$out"
minutes() { awk -v m="$1" -v s="$scale" 'BEGIN { print m * s }'; }

common=(--data "$data" --encoder-weights hed-bsds500 --crop-size 128 --crops-per-image 16
        --batch-size 32 --lr 1e-3 --no-cache --workers 3 --epochs 100000 --verbose 0)
fit() {  # fit NAME MINUTES [args...]: one run, its log beside the run folder
    local name=$1 mins=$2
    shift 2
    "${PYTHON:-python3}" -m training.fit "${common[@]}" --out "$out/$name" --minutes "$(minutes "$mins")" "$@" "${extra[@]}" \
        > "$out/$name.log" 2>&1
    echo "$name: exit $?"
}
extra=("$@")

fit vgg16-block3_conv3 7 &
fit vgg16-block3_conv3-pixelshuffle 7 --upsample pixel_shuffle --upsample-widths 16,16 &
fit vgg16-block3_conv3-deep 7 --decoder-width 48 --res-blocks 7 --upsample-widths 48,32 &
{ fit vgg16-block1_conv2 2.5 --layer block1_conv2; fit vgg16-block2_conv2 4 --layer block2_conv2; } &
{ fit vgg16-block4_conv3 3.5 --layer block4_conv3; fit vgg16-block5_conv3 3 --layer block5_conv3; } &
wait
