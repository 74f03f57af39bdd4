#!/usr/bin/env bash
# The command a rented GPU machine runs (JAX, no TensorFlow, no Keras, no network, 64 MiB of files):
# install Keras from wheels, train with training/train_models.sh, stop everything by a deadline so the
# results always come back, and pack each run folder (no backups, the last sample grid) into $OUT.
#
#   here:  python -m training.gpu_bundle pack .devdata          # photos + encoder copy, ~33 MB
#          python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#              --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .devdata/whl \
#              keras==3.15.1 namex==0.1.0 optree==0.20.0
#          (.devdata/ listed in .git/info/exclude; carry it)
#   there: bash training/gpu_run.sh [TIME_SCALE] [extra fit args...]
#   back:  tar xzf each NAME.tgz into runs/gpu, then
#          python -m training.gpu_bundle adopt .devdata runs/gpu/vgg16-*
#          python -m training.export runs/gpu/vgg16-block3_conv3 models/NEW --holdout ../shared/photos/holdout
# LOCAL_TEST=1 OUT=/tmp/out PATH=.venv/bin:$PATH bash training/gpu_run.sh 0.05 --limit 24 tries it on a CPU.
t0=$SECONDS
if [ -z "${LOCAL_TEST:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devdata/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export KERAS_BACKEND=jax RECON_TORCHVISION_VGG16_FILE=$PWD/.devdata/vgg16.ckpt PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null; python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
runs=/tmp/gpuruns; rm -rf $runs
deadline=${DEADLINE:-535}; first=${FIRST_EPOCH_BY:-170}
bash training/train_models.sh .devdata/train $runs "$@" > $OUT/train_models.log 2>&1 &
main=$!
ok=0
while kill -0 $main 2>/dev/null; do
  if [ $ok = 0 ] && grep -q "^epoch 1/" $runs/vgg16-block3_conv3.log 2>/dev/null && grep -q "^epoch 1/" $runs/vgg16-block1_conv2.log 2>/dev/null; then
    ok=1; echo "first epochs done at $((SECONDS - t0)) s"; fi
  if [ $ok = 0 ] && [ $((SECONDS - t0)) -gt $first ]; then echo "no first epoch by ${first}s: stopping"; break; fi
  if [ $((SECONDS - t0)) -gt $deadline ]; then echo "deadline: stopping"; break; fi
  sleep 2
done
pkill -TERM -f "training.fit" ; sleep 3; pkill -KILL -f "training.fit"; wait
for d in $runs/*/; do
  n=$(basename $d); last=$(ls $d/samples 2>/dev/null | tail -1); [ -n "$last" ] && cp $d/samples/$last $d/last_samples.png
  tar czf $OUT/$n.tgz -C $runs --exclude "$n/backup" --exclude "$n/samples" $n $n.log
done
tail -n 3 $runs/*.log; echo "wrapper done at $((SECONDS - t0)) s"; ls -la $OUT
