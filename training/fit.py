"""Train a decoder that inverts a layer of a frozen network (VGG16, AlexNet, EfficientNet-Lite0 or one's own).

    python -m training.fit --data PHOTOS --out runs/a --epochs 10
    python -m training.fit --backbone alexnet --layer conv5 --data PHOTOS --out runs/b
    python -m training.fit --encoder MY_MODEL.keras --layer NAME --preprocessing zero_to_255 --data PHOTOS --out runs/c
    python -m training.fit --resume --out runs/a       # after Ctrl-C, a crash or a kill

The defaults are the bundled block3_conv3 recipe (128 px crops, batches of 16, a 48-wide
pixel-shuffle decoder with 7 residual blocks). The run folder is a loadable model folder
(config.json, encoder/decoder weights) plus history.json, loss_curve.png, split.json,
run_config.json and samples/ (a grid per epoch). Training data streams from the files (or from a
feature cache, when it fits on disk): memory does not grow with the folder. Every file is written
aside and renamed into place, so a kill at any instant leaves the last good state: it loses at most
the current epoch, or the last --save-every steps, and `--resume --out RUN` continues the run with
its own settings (run_config.json) and files (split.json).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from recon.atomic import PART_PREFIX, write_atomically, write_json_atomically
from recon.config import (BACKBONE_PREPROCESSING, BACKBONES, BORDER_CELLS, NAMED_ENCODER_WEIGHTS, OWN_KERAS_MODEL,
                          PREPROCESSING, ReconConfig)
from recon.metrics import SSIM_MIN_SIZE
from recon.startup import require_folders, start_tensorflow_quietly
from recon.training_record import TrainingRecord

UNLIMITED_EPOCHS = 100_000  # --minutes without --epochs: the time budget ends the run
LR_FLOOR = 0.05  # the cosine schedule ends at this fraction of the peak learning rate
RECIPE_UPSAMPLE_WIDTHS = (48, 32, 16, 8, 8, 8)  # the bundled recipe's x2 stages, the first ones a layer needs
DEFAULT_LAYERS = {"vgg16": "block3_conv3", "alexnet": "conv2", "efficientnet_lite0": "block2"}  # stride 4, 8, 4
TRAINING_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
POLICY_OF = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}  # --precision's short names
# What a resumed run may be given anew: how long it trains, how it shows progress, and the machine it
# runs on (devices, threads, where the feature cache lives), none of which changes what it learns.
APPLIED_ON_RESUME = ("epochs", "minutes", "verbose", "devices", "workers", "cache_dir", "push_to_hub")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "recon" / "features"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.fit", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="folder of training images, searched recursively (symlinked folders followed; "
                                  "run folders inside it left out); not needed with --resume")
    p.add_argument("--val-data", help="folder of validation images; default: --data's own train/ and val/ "
                                      "(or valid/) subfolders if it has them, else a hash split of --data")
    p.add_argument("--out", required=True, help="run folder (becomes a model folder)")
    p.add_argument("--backbone", default="vgg16", choices=list(BACKBONES),
                   help="the frozen network (default vgg16); --encoder for one's own Keras model instead")
    p.add_argument("--layer", help="the layer whose features to invert; default "
                                   + ", ".join(f"{b}: {layer}" for b, layer in DEFAULT_LAYERS.items())
                                   + "; with --encoder, a layer name of that model (required)")
    p.add_argument("--encoder", metavar="FILE.keras",
                   help="one's own Keras model, cut at --layer (a 4-D feature map whose stride is a power of 2); "
                        "the model folder keeps the cut model, so loading never needs FILE again")
    p.add_argument("--preprocessing", choices=PREPROCESSING,
                   help="how [0,1] RGB becomes the encoder's input; required with --encoder (keras.applications "
                        "models with their own rescaling: zero_to_255); the backbone's own by default")
    p.add_argument("--image-size", type=positive_int, default=224,
                   help="model size; validation images are shown at it")
    p.add_argument("--crop-size", type=crop_size_arg, default=128,
                   help="train on random crops of this size (default 128); 0: on whole images at --image-size")
    p.add_argument("--crops-per-image", type=positive_int, default=8, help="samples per image per epoch")
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="default 10, or no limit with --minutes; a resumed run trains to its own unless given")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--minutes", type=float,
                   help="train for this long instead: cosine decay over wall-clock time (--epochs, if given, an "
                        "upper bound)")
    p.add_argument("--alpha", type=float, default=0.8, help="loss = alpha*L1 + (1-alpha)*(1-SSIM)")
    p.add_argument("--perceptual-weight", type=float, default=0.0, help="feature-matching loss weight; 0 = off")
    p.add_argument("--decoder-width", type=int, default=48, help="channels of the decoder's residual trunk")
    p.add_argument("--res-blocks", type=int, default=7, help="residual blocks in the trunk")
    p.add_argument("--upsample-widths", type=lambda s: [int(w) for w in s.split(",")],
                   help="comma-separated channels per x2 stage; default the first of "
                        f"{','.join(map(str, RECIPE_UPSAMPLE_WIDTHS))} the layer's stride needs")
    p.add_argument("--upsample", default="pixel_shuffle", choices=["resize", "pixel_shuffle"],
                   help="x2 stages as sub-pixel convolutions (default; block3_conv3: 442,739 parameters) "
                        "or as resize + convolution")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--crop-seed", type=int,
                   help="seed of the training crops; default --seed, and for --init-from one more than the "
                        "starting run's, so that a warm start does not replay the crops it was trained on")
    p.add_argument("--encoder-weights",
                   help="; ".join(f"{b}: {' | '.join(names)} (default {names[0]})" for b, names in
                                  NAMED_ENCODER_WEIGHTS.items()) + "; or a weights FILE")
    p.add_argument("--precision", default="auto", choices=["auto", *TRAINING_POLICIES, "bfloat16", "float16"],
                   help="Keras dtype policy (bfloat16 and float16 mean their mixed_ policies); auto: "
                        "mixed_bfloat16 on CPUs with AMX/AVX512-BF16, mixed_float16 on CUDA GPUs, else float32. "
                        "Weights are saved float32 either way")
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help=f"where the feature cache lives (default {DEFAULT_CACHE_DIR}): one folder per training "
                        "set, encoder and scales, holding the encoder's float16 feature maps of every training "
                        "photo at --cache-scales sizes and both flips, with their pixels; about 28 MB per 4:3 "
                        "photo at block3_conv3 and the defaults (block1_conv2 106 MB, block5_conv3 6 MB). "
                        "fit prints the size before building; a later run on the same files reuses it; delete "
                        "the folder to reclaim the space")
    p.add_argument("--cache-max-gb", type=float, default=20.0,
                   help="largest feature cache to build; a bigger one (or one over the free disk) streams instead")
    p.add_argument("--cache-scales", type=positive_int, default=3,
                   help="scales each photo is encoded at for the feature cache (with --crop-size): short sides "
                        "spaced evenly in log scale from 0.75x to 2x --image-size, the range of --no-cache's crops")
    p.add_argument("--no-cache", action="store_true",
                   help="stream fresh crops from the files every epoch, encoded inside the training step "
                        "(fastest on a GPU; any folder size)")
    p.add_argument("--in-memory", action="store_true",
                   help="like --no-cache, but decode every training image into memory once first "
                        "(quicker for a small folder; about 3 bytes of RAM per pixel)")
    p.add_argument("--workers", type=positive_int, default=min(8, os.cpu_count() or 1),
                   help="threads decoding and cropping images")
    p.add_argument("--save-every", type=positive_int, metavar="STEPS",
                   help="also back up every STEPS steps, so a crash loses at most that many (default: each epoch end)")
    p.add_argument("--init-from", help="warm start from a model folder (its config, decoder weights and own "
                                       "encoder file)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out with every setting it was started with "
                        "(run_config.json) and its files (split.json); --epochs, --minutes, --verbose, --devices, "
                        "--workers, --cache-dir and --push-to-hub may be given anew, any other flag must match")
    p.add_argument("--push-to-hub", metavar="REPO_ID",
                   help="publish the finished model folder (a token and the Hub are checked before training)")
    p.add_argument("--verbose", type=int, default=1 if sys.stdout.isatty() else 0,
                   help="Keras progress: 0 none (fit's own line per epoch only), 1 bar, 2 Keras' line per epoch; "
                        "default 1 on a terminal, 0 into a log file (where the bar's redraws pile up)")
    p.add_argument("--devices", type=device_count, nargs="?", const="all",
                   help="train data-parallel on N devices, or all visible (no N); --batch-size is split across "
                        "them. Default 1 (all in a multi-machine run). Needs KERAS_BACKEND=jax: see "
                        "training/distribute.py")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """The run's settings: the flags given, or for --resume the run's own (`resumed_args`). Answers
    without TensorFlow: bad sizes, missing folders, an unwritable --out, a resume that cannot be."""
    p = build_parser()
    args = p.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        p.error(f"--out {args.out}: a file, not a folder")
    if args.resume:
        args = resumed_args(p, args, given_flags(argv))
    elif args.data is None:
        p.error("the following arguments are required: --data (or --resume, to continue the run in --out)")
    elif args.minutes and "epochs" not in given_flags(argv):
        args.epochs = UNLIMITED_EPOCHS  # the time budget decides, not the default 10 epochs
    require_folders(p, {"--data": args.data, "--val-data": args.val_data, "--init-from": args.init_from})
    problem = output_problem(Path(args.out))
    if problem:
        p.error(problem)
    # a warm start's network and layer come from its folder, a resumed run's were checked when it
    # started, one's own model's stride is known once it is read: each checked then
    if not (args.init_from or args.resume):
        problem = encoder_problem(args, given_flags(argv))
        if args.encoder is None and not problem:
            problem = size_problem(args.layer, BACKBONES[args.backbone][args.layer][1], BORDER_CELLS[args.backbone],
                                   args.image_size, args.crop_size)
        if problem:
            p.error(problem)
    return args


def encoder_problem(args: argparse.Namespace, given: dict) -> str | None:
    """Why the encoder flags do not name an encoder, or None; fills in the backbone's default layer."""
    if args.encoder is not None:
        if "backbone" in given:
            return "--encoder names one's own model: leave --backbone out"
        if not Path(args.encoder).is_file():
            return f"--encoder {args.encoder}: no such file"
        if args.layer is None or args.preprocessing is None:
            return ("--encoder needs --layer (the name of the layer whose features to invert) and --preprocessing "
                    f"(how the model takes its input: one of {', '.join(PREPROCESSING)})")
        return None
    layers = BACKBONES[args.backbone]
    args.layer = args.layer or DEFAULT_LAYERS[args.backbone]
    if args.layer not in layers:
        return f"--layer {args.layer}: {args.backbone} has no such layer; its layers: {', '.join(layers)}"
    if args.preprocessing is not None and args.preprocessing not in BACKBONE_PREPROCESSING[args.backbone]:
        return (f"--preprocessing {args.preprocessing}: {args.backbone}'s weights take "
                f"{' or '.join(BACKBONE_PREPROCESSING[args.backbone])}")
    return None



def given_flags(argv=None) -> dict:
    """The flags typed on the command line, by name ("lr"), without the defaults argparse fills in."""
    p = build_parser()
    for action in p._actions:
        action.default, action.required = argparse.SUPPRESS, False
    return vars(p.parse_args(argv))


def resumed_args(p: argparse.ArgumentParser, args: argparse.Namespace, given: dict) -> argparse.Namespace:
    """--resume's settings: the run's own, from its run_config.json. A flag given anew is applied, and
    named, where it only changes how long or where the run trains (APPLIED_ON_RESUME); any other
    that differs from the run's refuses the resume, every difference listed. --verbose not given
    follows this terminal (the default), like a new run's."""
    out = Path(args.out)
    saved = read_json(out / "run_config.json")
    if not isinstance(saved, dict):
        raise SystemExit(f"--resume: {out} holds no run to resume (no readable run_config.json)")
    refuse_finished(out)
    run = {"precision": "float32"} | saved  # runs from before --precision trained in float32
    if "crop_seed" not in saved:  # runs from before --crop-seed cut their crops from --seed
        run["crop_seed"] = run.get("seed", args.seed)
    differ, applied = [], {"verbose": args.verbose}
    for key, value in given.items():
        before = run.get(key, p.get_default(key))  # a run from before a flag existed had its default
        if key in ("resume", "out") or same_setting(key, value, before):
            continue
        flag = "--" + key.replace("_", "-")
        if key in APPLIED_ON_RESUME:
            print(f"applying {flag} {value} (was {before})")
            applied[key] = value
        else:
            differ.append(f"  {flag} {value} (the run's: {before})")
    if differ:
        raise SystemExit(f"--resume: {out} was started with other settings, and a resumed run trains as it started:\n"
                         + "\n".join(differ) + f"\nLeave them out (--resume --out {out} alone takes every setting "
                         f"from its run_config.json), or start a new run from it: --init-from {out} --out NEW_FOLDER")
    return argparse.Namespace(**(vars(args) | run | applied | {"resume": True, "out": args.out}))


def same_setting(key: str, given, saved) -> bool:
    """Whether a flag given to --resume says what the run's setting says: a path typed another way
    names the same folder; --precision auto is whatever it resolved to when the run started."""
    if key == "precision":
        return given == "auto" or POLICY_OF.get(given, given) == saved
    if given == saved:
        return True
    return isinstance(given, str) and isinstance(saved, str) and Path(given).resolve() == Path(saved).resolve()


def refuse_finished(out: Path) -> None:
    """SystemExit for a run that ended: its backup, kept from the start of training to its end, is
    gone and its history is there. Its last epoch's weights and optimizer state went with the
    backup, so it cannot go on; a warm start from it can."""
    if (out / "backup").exists() or not (out / "history.json").exists():
        return
    clear_leftovers(out)  # of a kill while its backup was deleted
    history = read_json(out / "history.json")
    done = f"{len(history)} epochs" if isinstance(history, list) else "history.json unreadable"
    raise SystemExit(f"--resume: the run in {out} finished ({done}; its backup is gone), so there "
                     f"is nothing to resume; to train it further, start a new run from it: "
                     f"--init-from {out} --out NEW_FOLDER")


def clear_leftovers(out: Path) -> None:
    """Delete what kills left half written in a run folder: files and folders named PART_PREFIX...,
    never renamed into place (the next write of the same file would replace them, but a best
    checkpoint may not come again)."""
    for folder in (out, out / "samples", out / "backup"):
        for path in folder.glob(PART_PREFIX + "*") if folder.is_dir() else ():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def read_json(path: Path):
    """The file's JSON, or None where it is missing or unreadable (half written by an older version)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def output_problem(out: Path) -> str | None:
    """Why the run folder cannot be written, or None. Probed by creating a file in it, or in its
    nearest existing parent: permissions alone do not say (root passes every check, a read-only
    disk fails none)."""
    existing = next(q for q in [out, *out.absolute().parents] if q.exists())
    if not existing.is_dir():
        return f"--out {out}: {existing} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=PART_PREFIX + "write-test-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        return f"--out {out}: cannot write in {existing} ({e.strerror or e})"
    return None


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def crop_size_arg(text: str) -> int | None:
    """`--crop-size` values: a positive size, or 0 for whole images (recorded as None)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, or 0 for whole images, not {value}")
    return value or None


def device_count(text: str) -> int | str:
    """`--devices` values: a positive count, or "all" for every visible device."""
    if text == "all":
        return text
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', not {value}")
    return value


def size_problem(layer: str, stride: int, border: int, image_size: int, crop_size: int | None) -> str | None:
    """Why these sizes cannot train `layer` of this stride and border cells (ReconConfig.border_cells),
    or None: every side a multiple of the stride, at least the 11 px the SSIM term of the loss needs,
    and (cached crops are cut in feature space) more than the border's cells."""
    smallest = max(stride * (border + 1), -(-SSIM_MIN_SIZE // stride) * stride)
    for flag, size in (("--image-size", image_size), ("--crop-size", crop_size)):
        if size is not None and (size % stride or size < smallest):
            return (f"{flag} {size}: {layer} needs a multiple of its stride {stride} of at least {smallest} px "
                    f"(the SSIM loss's window is {SSIM_MIN_SIZE} px)")
    return None


if __name__ == "__main__":
    ARGS = parse_args()  # --help, bad arguments and a resume's checks answer now, before TensorFlow loads
    start_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from recon.config import ConfigError  # noqa: E402
from recon.decoder import build_decoder  # noqa: E402
from recon.encoder import EncoderWeightsError, build_encoder  # noqa: E402
from recon.own_encoder import cut_own_model, feature_geometry  # noqa: E402
from recon.pipeline import (CONFIG_FILE, ENCODER_FILE, ModelFolderError, Reconstructor, file_sha256,  # noqa: E402
                            is_packaged, load_folder_encoder)
from recon.precision import resolve_precision, training_policy  # noqa: E402
from training.data import (CachedCrops, EvalViews, FeatureCache, FeatureMapCache, FeatureMapCrops,  # noqa: E402
                           OnTheFlyCrops, StreamingCrops, cache_short_sides, encode_batches, encoder_cache_id,
                           feature_rms, find_images, hash_split, image_grid, load_image_set, record_skipped,
                           save_png, save_split, split_folders)
from training.distribute import release_devices, setup_devices, share_batches  # noqa: E402
from training.losses import make_loss, psnr_metric, ssim_metric  # noqa: E402
from training.plots import plot_history  # noqa: E402
from training.record import epoch_crops, record_from_history  # noqa: E402


def main(argv=None, callbacks=(), args: argparse.Namespace | None = None) -> Path:
    args = args or parse_args(argv)
    out = Path(args.out)
    if args.push_to_hub:
        check_hub(args.push_to_hub)
    if args.encoder and not (args.resume or args.init_from):
        own_encoder_fields(args.encoder, args.layer)  # a layer it cannot invert: said before any work
    if not args.resume:
        claim_folder(out)
    # before anything asks JAX for devices (resolve_precision does): a multi-machine run joins here
    args.devices, devices = setup_devices(args.devices, args.batch_size)
    print(f"devices: {devices}")
    # the policy resolved here is what run_config.json records, so a resume elsewhere trains the same way
    args.precision = policy = (training_policy(resolve_precision()) if args.precision == "auto"
                               else args.precision if args.precision in TRAINING_POLICIES
                               else training_policy(args.precision))
    args.crop_seed = crop_seed(args)
    if not args.resume:
        args.crops_before = crops_before(args.init_from)
    out.mkdir(parents=True, exist_ok=True)
    clear_leftovers(out)
    save_run_config(out, args)
    keras.utils.set_random_seed(args.seed)
    print(f"precision: {policy}")
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # float32 variables, so saved weights do not depend on it
    try:
        return train(args, out, callbacks)
    except OSError as e:
        if not disk_full(e):
            raise
        raise SystemExit(f"{out}: the disk is full ({e.strerror or e}); training stopped, and the run folder keeps "
                         f"its last good state: free some space, then {resume_command(out)}") from None
    finally:
        keras.config.set_dtype_policy(previous_policy)
        release_devices()


def claim_folder(out: Path) -> None:
    """A new run's folder: refused where it holds a run with work to lose (an epoch logged, or a
    backup past its starting point); what a start that never got that far left is cleared."""
    backup = read_backup(out / "backup")
    if (out / "history.json").exists() or (backup and (backup["epoch"], backup["steps_done"]) != (0, 0)):
        raise SystemExit(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    if (out / "run_config.json").exists():  # a start that failed before its first epoch ended
        print(f"{out}: replacing a run that never finished an epoch")
    remove_folder(out / "backup")


def check_hub(repo_id: str) -> None:
    """--push-to-hub's needs, checked before hours of training rather than after: a valid repo id,
    a token, and a Hub that answers. SystemExit with one line for the first that fails."""
    import httpx2
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise SystemExit(f"--push-to-hub {repo_id}: not a repo id ({e})") from None
    if get_token() is None:
        raise SystemExit(f"--push-to-hub {repo_id}: no Hub token: set HF_TOKEN or run `hf auth login` "
                         "(with write access), then start again")
    api = HfApi()
    try:
        api.repo_info(repo_id, timeout=20)
    except RepositoryNotFoundError:
        pass  # created by the push
    except OfflineModeIsEnabled:
        raise SystemExit(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, so the Hub cannot be reached") from None
    except HfHubHTTPError as e:  # it answered, with a refusal (a token without access, say) or a failure
        status = e.response.status_code if e.response is not None else "an error"
        raise SystemExit(f"--push-to-hub {repo_id}: the Hub at {api.endpoint} answered {status} for the repo; "
                         "check the token's access (hf auth whoami)") from None
    except httpx2.HTTPError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SystemExit(f"--push-to-hub {repo_id}: cannot reach the Hub at {api.endpoint} ({reason})") from None
    print(f"push-to-hub: {repo_id} on {api.endpoint}, token found")


def push_finished(out: Path, repo_id: str) -> None:
    """Publish the finished folder; a failure is one line saying how to push it later."""
    from hub import HubError, push_to_hub
    try:
        print(f"pushed: {push_to_hub(out, repo_id)}")
    except HubError as e:
        raise SystemExit(f"{e}\nthe model folder {out} is complete: push it with python -m hub push "
                         f"{shlex.quote(str(out))} {repo_id}") from None


def disk_full(e: OSError) -> bool:
    """Whether an error means no space left (h5py reports it in its message, with errno unset)."""
    return e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e) or "errno = 28" in str(e)


def resume_command(out: Path) -> str:
    return f"python -m training.fit --resume --out {shlex.quote(str(out))}"


def crop_seed(args: argparse.Namespace) -> int:
    """The training crops' seed: --crop-seed if given, else --seed for a run from scratch and, for a
    warm start, one more than the starting run's. Crop i of epoch e comes from (seed, e, i) and every
    run counts its epochs from 0, so a warm start on the same seed would serve again, in the same
    order, the crops its starting model was trained on (the bundled block3_conv3's five runs did)."""
    if args.crop_seed is not None:
        return args.crop_seed
    if not args.init_from:
        return args.seed
    run_config = Path(args.init_from) / "run_config.json"  # absent from a folder pulled from the Hub
    before = json.loads(run_config.read_text()) if run_config.is_file() else {}
    return int(before.get("crop_seed", before.get("seed", args.seed))) + 1


def crops_before(init_from: str | None) -> int:
    """Crops behind a warm start's starting weights: its training.json's count; for an older folder
    without one, its kept epoch's steps x batch size (its own starting point unknown, so 0)."""
    if not init_from:
        return 0
    record = TrainingRecord.load(init_from)
    if record is not None:
        return record.crops_seen
    try:
        history = json.loads((Path(init_from) / "history.json").read_text())
        batch = json.loads((Path(init_from) / "run_config.json").read_text())["batch_size"]
        return epoch_crops(max(history, key=lambda h: h["val_psnr"]), batch)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def save_run_config(out: Path, args: argparse.Namespace) -> None:
    """The run's arguments as resolved, which --resume reads back (the saved settings win)."""
    write_json_atomically(out / "run_config.json", vars(args), indent=2, sort_keys=True)


def train(args: argparse.Namespace, out: Path, callbacks=()) -> Path:
    train_files, val_files = split_files(args, out)
    kept = args.resume and (out / CONFIG_FILE).is_file()  # a resumed run's folder holds its config
    cfg, start, encoder_folder = starting_config(args, out, kept)
    encoder = run_encoder(cfg, encoder_folder)
    train_data, cached = training_batches(args, out, cfg, encoder, train_files)
    if cfg.feature_scale is None:  # from the features of the first 256 training crops
        first = np.concatenate([train_data[i][0] for i in range(min(len(train_data), -(-256 // args.batch_size)))])
        cfg.feature_scale = feature_rms(first if cached else encode_batches(encoder, first, args.batch_size))
    # a warm start trains the loaded decoder's weights on (in this run's precision); where the run
    # has a backup (a resume), StepBackup replaces them with its own when fit starts
    decoder = build_decoder(cfg)
    if start is not None:
        decoder.set_weights(start.decoder.get_weights())
    check_free_space(out, cfg, encoder, decoder)
    if not kept:  # loadable from the start; a resumed run keeps its best checkpoint
        save_model_folder(Reconstructor(cfg, encoder, decoder), out)

    # validation streams too, at the evaluation view; a decoder trained on cached features is
    # validated on the encoder's features of it, computed batch by batch
    val_data = EvalViews(val_files, cfg.image_size, args.batch_size, encoder=encoder if cached else None,
                         workers=args.workers)
    grid_features, grid_targets = EvalViews(val_files, cfg.image_size, 4, encoder=encoder)[0]  # for SampleGrid
    print(f"decoder: {decoder.count_params():,} parameters; encoder {cfg.encoder_weights} {cfg.layer} "
          f"{tuple(grid_features.shape[1:])}")
    # With the cache the decoder trains on stored features; without it, on images, through the
    # frozen encoder inside the same graph (one compiled step on a GPU).
    model = (decoder if cached
             else keras.Model(encoder.input, decoder(encoder.output), name="encoder_decoder"))
    train_data, val_data = share_batches(train_data, val_data)  # even shares per device (several devices)
    if args.minutes:  # cosine over wall-clock time instead of steps (see TimeBudget)
        schedule = args.lr
    else:
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=len(train_data) * args.epochs,
                                                          alpha=LR_FLOOR)
    loss = make_loss(args.alpha, args.perceptual_weight, encoder, cfg.feature_scale)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=[psnr_metric, ssim_metric])
    if keras.backend.backend() == "jax":  # build the loss and metrics here: Keras 3.15's JAX fit would take
        # a batch from the decoding threads' queue for it, and the queue would serve every epoch one batch late
        inputs, targets = val_data[0]
        model.evaluate(inputs, targets, batch_size=len(targets), verbose=0)

    history = EpochLog(out, args.epochs, [train_data, val_data], run_history(out, read_backup(out / "backup")),
                       getattr(args, "crops_before", 0) or 0, args.batch_size)
    fit_callbacks = run_callbacks(args, out, history, train_data, decoder, (grid_features, grid_targets), callbacks)
    try:
        with warnings.catch_warnings():  # an epoch resumed mid-way ends before the step count Keras took
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            # shuffle=False: Keras would reorder the batches with Python's random state, which a resume
            # does not restore; the datasets shuffle their samples from (seed, epoch) instead
            model.fit(train_data, epochs=args.epochs, validation_data=val_data, callbacks=fit_callbacks,
                      shuffle=False, verbose=args.verbose)
    except KeyboardInterrupt:
        since = f"the last {args.save_every}-step backup" if args.save_every else "the last epoch's end"
        print(f"\ninterrupted in epoch {len(history.records) + 1}; continue with {resume_command(out)} "
              f"(from {since})")
        raise
    final = max(history.records, key=lambda h: h["val_psnr"])
    print(f"done: best val PSNR {final['val_psnr']:.2f} dB, SSIM {final['val_ssim']:.4f} at epoch "
          f"{final['epoch']}; model folder {out}")
    if args.push_to_hub:
        push_finished(out, args.push_to_hub)
    return out


def run_callbacks(args, out: Path, history: "EpochLog", train_data, decoder, grid, callbacks) -> list:
    """fit's callbacks, in the order they must run at each epoch's end (see StepBackup)."""
    best = max((h["val_psnr"] for h in history.records), default=None)
    return [
        StepBackup(out / "backup", train_data, args.save_every, history),
        keras.callbacks.ProgbarLogger(),  # silent at --verbose 0; listed here so the bar ends before our line
        history,
        BestDecoder(decoder, out / "decoder.weights.h5", best),
        SampleGrid(out / "samples", decoder, *grid),
        *([TimeBudget(args.minutes, args.lr, history)] if args.minutes else []),
        *callbacks,
    ]


def save_model_folder(model: Reconstructor, out: Path) -> None:
    """`save_pretrained` into a folder inside `out`, then each file renamed into place, config.json
    last: a kill leaves every file whole, and a folder with a config complete. An encoder file that
    this model does not keep (a packaged encoder's) is removed, as save_pretrained would."""
    staging = out / (PART_PREFIX + "model")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    for path in sorted(staging.iterdir(), key=lambda p: p.name == CONFIG_FILE):
        os.replace(path, out / path.name)
    if not (staging / ENCODER_FILE).exists() and is_packaged(model.config):
        (out / ENCODER_FILE).unlink(missing_ok=True)
    staging.rmdir()


def check_free_space(out: Path, cfg: ReconConfig, encoder, decoder) -> None:
    """SystemExit, before training, where the disk cannot hold the run's first checkpoints: the
    decoder's float32 weights as the best checkpoint and in two backup slots with Adam's two moments
    each, the encoder's where the folder keeps its own, and a megabyte for the rest."""
    encoder_params = 0 if is_packaged(cfg) else encoder.count_params()
    need = 4 * (7 * decoder.count_params() + encoder_params) + 2**20
    free = shutil.disk_usage(out).free
    if need > free:
        raise SystemExit(f"--out {out}: {free / 1e6:.1f} MB free on its disk, and the run's first checkpoints "
                         f"need about {need / 1e6:.1f} MB")


def run_history(out: Path, backup: dict | None) -> list[dict]:
    """The epochs behind a run's weights: history.json's records up to its backup (an epoch logged
    after its last backup trains again), none without a backup. Where history.json cannot be read,
    the copy the backup keeps, with a warning: a kill while an older version wrote it left half a file."""
    if backup is None:
        return []
    records = read_json(out / "history.json")
    if not isinstance(records, list):
        records = backup["history"] or []
        if (out / "history.json").exists():
            print(f"warning: {out / 'history.json'} is unreadable; rebuilt from the backup's copy "
                  f"({len(records)} epochs)")
    return [r for r in records if r["epoch"] <= backup["epoch"]]


def split_files(args: argparse.Namespace, out: Path) -> tuple[list[Path], list[Path]]:
    """The training and validation files, written down in split.json so evaluate never scores a
    training image. A --data folder with train/ and val/ (or valid/) subfolders keeps that split
    (CelebA-HQ's layout); --val-data overrides it; otherwise a hash of each path decides. Run
    folders under --data, this one first, are no part of it; a resumed run keeps the files its
    split.json lists, whatever the folder holds now."""
    if args.resume and (recorded := recorded_split(out)) is not None:
        return recorded
    if args.val_data:
        train_files, val_files = find_images(args.data, args.limit, out), find_images(args.val_data, out=out)
        val_source = "val-data"
        print(f"split: train on {args.data}, validate on --val-data {args.val_data}")
    elif folders := split_folders(args.data):
        train_files, val_files = find_images(folders[0], args.limit, out), find_images(folders[1], out=out)
        val_source = f"{folders[1].name}/ folder"
        print(f"split: the folder's own, train on {folders[0]}, validate on {folders[1]}")
    else:
        train_files, val_files = hash_split(find_images(args.data, args.limit, out), Path(args.data))
        val_source = "hash split"
        print(f"split: a hash of each path under {args.data} (it has no train/ and val/ subfolders)")
    print(f"data: {len(train_files)} train, {len(val_files)} val files (decoded batch by batch)")
    save_split(out / "split.json", args.data, train_files, val_files, val_source)
    return train_files, val_files


def recorded_split(out: Path) -> tuple[list[Path], list[Path]] | None:
    """A resumed run's files as its split.json lists them (None where it never got that far), so that
    its data set does not change mid-run; SystemExit naming the files that have gone since."""
    split = read_json(out / "split.json")
    if not isinstance(split, dict):
        return None
    train_files, val_files = ([Path(entry["file"]) for entry in split[part]] for part in ("train", "val"))
    gone = [str(path) for path in train_files + val_files if not path.is_file()]
    if gone:
        raise SystemExit(f"--resume: {len(gone)} of the {len(train_files) + len(val_files)} files the run trains "
                         f"and validates on (its split.json) are gone: {', '.join(gone[:3])}"
                         + (" ..." if len(gone) > 3 else "") + f"; put them back, or start a new run from it: "
                         f"--init-from {out} --out NEW_FOLDER")
    print(f"split: the run's own (split.json), {len(train_files)} train, {len(val_files)} val files")
    return train_files, val_files


def starting_config(args: argparse.Namespace, out: Path, kept: bool) -> tuple[ReconConfig, Reconstructor | None,
                                                                              Path | None]:
    """The config that rebuilds the decoder exactly, the model a warm start (--init-from) trains on
    from, and the folder whose encoder weights to use: a resumed run's own (`kept`: its folder holds
    its config); a warm start's; or a new config from the arguments."""
    if kept:
        try:
            return ReconConfig.load(out / CONFIG_FILE), None, out
        except ConfigError as e:
            raise SystemExit(f"--resume: {e}") from None
    try:
        start = Reconstructor.from_pretrained(args.init_from) if args.init_from else None
    except ModelFolderError as e:
        raise SystemExit(f"--init-from: {e}") from None
    if start is not None:
        c = start.config
        problem = size_problem(c.layer, c.stride, c.border_cells, c.image_size, args.crop_size)
        if problem:
            raise SystemExit(f"--init-from {args.init_from}: {problem}")
        return start.config, start, Path(args.init_from)
    encoder = (own_encoder_fields(args.encoder, args.layer) if args.encoder
               else {"backbone": args.backbone, "encoder_weights": args.encoder_weights})
    stride = encoder.get("feature_stride") or BACKBONES[args.backbone][args.layer][1]
    widths = args.upsample_widths or list(RECIPE_UPSAMPLE_WIDTHS[:stride.bit_length() - 1])
    try:
        cfg = ReconConfig(layer=args.layer, image_size=args.image_size, preprocessing=args.preprocessing,
                          decoder_width=args.decoder_width, num_res_blocks=args.res_blocks, upsample=args.upsample,
                          upsample_widths=widths, **encoder)
    except ConfigError as e:
        raise SystemExit(f"python -m training.fit: {e}") from None
    problem = size_problem(cfg.layer, cfg.stride, cfg.border_cells, cfg.image_size, args.crop_size)
    if problem:
        raise SystemExit(f"python -m training.fit: {problem}")
    return cfg, None, None


@functools.lru_cache(maxsize=2)  # main checks it before any work, starting_config uses it
def own_encoder_fields(path: str, layer: str) -> dict:
    """The config fields of one's own model (--encoder) cut at --layer: its file and hash, and the
    map's measured channels, stride and border. SystemExit with what is wrong: no such layer, not
    a 4-D map, a stride the decoder cannot invert, layers outside Keras' own."""
    try:
        channels, stride, border = feature_geometry(cut_own_model(path, layer))
    except EncoderWeightsError as e:
        raise SystemExit(f"--encoder {path} --layer {layer}: {e}") from None
    print(f"encoder: {path} cut at {layer}: {channels} channels, stride {stride}"
          + (f", {border} border cell(s)" if border else ""))
    return {"backbone": OWN_KERAS_MODEL, "encoder_weights": str(Path(path).resolve()),
            "encoder_sha256": file_sha256(path), "feature_channels": channels, "feature_stride": stride,
            "feature_border": border}


def run_encoder(cfg: ReconConfig, folder: Path | None) -> keras.Model:
    """The frozen encoder, in this run's precision. A warm start or a resumed run uses the weights its
    model folder holds (its own encoder files, or the packaged one its config names, hash-checked),
    not whatever the FILE its config recorded holds now, or whether it is still there."""
    try:
        return build_encoder(cfg) if folder is None else load_folder_encoder(folder, cfg)
    except (ModelFolderError, EncoderWeightsError) as e:
        raise SystemExit(f"{folder or cfg.encoder_weights}: {e}") from None


def training_batches(args: argparse.Namespace, out: Path, cfg: ReconConfig, encoder: keras.Model,
                     train_files: list[Path]) -> tuple[keras.utils.PyDataset, bool]:
    """The training batches, and whether they serve cached features (else images).

    The default, where it fits under --cache-max-gb and on the disk: crops cut in feature space from
    the encoder's feature maps of whole photos at --cache-scales scales and both flips, encoded once
    (`FeatureMapCache`); for whole-image training (no --crop-size), the features of a fixed set of
    views (`FeatureCache`). Otherwise crops streamed from the files, the encoder inside the training
    step (--no-cache), or the same crops cut from images decoded up front (--in-memory).
    """
    encoder_id = encoder_cache_id(cfg, encoder)
    if not (args.no_cache or args.in_memory):
        if args.crop_size:
            short_sides = cache_short_sides(cfg.image_size, args.crop_size, args.cache_scales)
            cache = FeatureMapCache(Path(args.cache_dir), FeatureMapCache.key_for(encoder_id, train_files, short_sides))
            size = None if cache.is_complete() else FeatureMapCache.size_bytes(
                encoder, photo_shapes(train_files), short_sides)
            what = f"{len(train_files)} photos x {len(short_sides)} scales (short side {short_sides} px) x 2 flips"
        else:
            cache = FeatureCache(Path(args.cache_dir), FeatureCache.key_for(
                encoder_id, train_files, args.crop_size, cfg.image_size, args.crops_per_image, args.crop_seed))
            count = len(train_files) * args.crops_per_image
            size = None if cache.is_complete() else FeatureCache.size_bytes(encoder, count, cfg.image_size)[0]
            what = f"{count} views"
        problem = size is not None and cache_problem(what, size, args.cache_max_gb, cache.dir)
        if problem:
            print(f"feature cache: {problem}: streaming instead, the encoder in every training step "
                  "(raise --cache-max-gb to cache anyway, or pass --no-cache to skip this check)")
            args.no_cache = True  # recorded, so that --resume trains the same way
            save_run_config(out, args)
        else:
            if size is not None and isinstance(cache, FeatureMapCache):
                print(f"feature cache: {what}, float16 maps + pixels = {size / 1e9:.2f} GB in {cache.dir}")
            return cached_batches(args, out, cfg, encoder, train_files, cache), True
    if args.in_memory:
        train = load_image_set(train_files, "loading train images")
        note_skipped(out, dict(train.skipped))
        print(f"data: {len(train.images)} images in memory ({len(train.skipped)} unreadable skipped)")
        return OnTheFlyCrops(train.images, args.crop_size, cfg.image_size, args.crops_per_image,
                             args.batch_size, args.crop_seed, workers=args.workers), False
    return StreamingCrops(train_files, args.crop_size, cfg.image_size, args.crops_per_image,
                          args.batch_size, args.crop_seed, workers=args.workers), False


def cached_batches(args, out, cfg, encoder, train_files, cache) -> keras.utils.PyDataset:
    """Open `cache`, building it first if it is not complete; batches of (features, target pixels)."""
    if cache.is_complete():
        print(f"feature cache: reusing {cache.dir}")
    elif isinstance(cache, FeatureMapCache):
        cache.build(encoder, train_files, cache_short_sides(cfg.image_size, args.crop_size, args.cache_scales),
                    workers=args.workers)
    else:
        cache.build(encoder, train_files, args.crop_size, cfg.image_size, args.crops_per_image, args.crop_seed,
                    workers=args.workers)
    skipped = dict(cache.skipped())
    note_skipped(out, skipped)
    if isinstance(cache, FeatureMapCache):
        maps = cache.open()
        data = FeatureMapCrops(maps, args.crop_size, args.crops_per_image, args.batch_size, args.crop_seed)
        print(f"feature cache: {len(maps.views)} views of {len(data.views_of)} photos, "
              f"{(maps.features.nbytes + maps.pixels.nbytes) / 1e9:.2f} GB ({len(skipped)} unreadable skipped)")
    else:
        features, targets = cache.open()
        data = CachedCrops(features, targets, args.batch_size, args.crop_seed)
        print(f"feature cache: {len(targets)} crops ({len(skipped)} unreadable skipped)")
    if not (len(data.views_of) if isinstance(data, FeatureMapCrops) else len(data.targets)):
        raise SystemExit("none of the training files is a readable image")
    return data


def photo_shapes(files: list[Path]) -> list[tuple[int, int]]:
    """(height, width) of each readable file from its header (no decoding), to size the cache."""
    shapes = []
    for path in files:
        try:
            with Image.open(path) as im:
                shapes.append(im.size[::-1])
        except (OSError, ValueError, Image.DecompressionBombError):
            pass
    return shapes


class EpochLog(keras.callbacks.Callback):
    """One log line per epoch, history.json and loss_curve.png rewritten after each epoch (each
    written aside and renamed into place); the unreadable files the datasets met in the epoch are
    counted in its line and recorded in skipped.json (and split.json). `records`: the epochs behind
    the run's weights (`run_history`)."""

    def __init__(self, out: Path, epochs: int, datasets, records: list[dict], crops_before: int = 0,
                 batch_size: int = 1):
        super().__init__()
        self.path, self.out, self.epochs, self.datasets = out / "history.json", out, epochs, datasets
        self.crops_before, self.batch_size, self.records = crops_before, batch_size, records

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        skipped = {f: r for d in self.datasets for f, r in d.take_skipped().items()}
        record = {"epoch": epoch + 1, "seconds": round(time.time() - self.start, 1)}
        record |= {k: float(v) for k, v in (logs or {}).items()}
        # every epoch trains each sample once (a resumed one: the rest of it), whatever the last batch's size
        record |= {"crops": (epoch + 1) * self.datasets[0].samples_per_epoch, "step": int(self.model.optimizer.iterations),
                   "learning_rate": float(self.model.optimizer.learning_rate), "skipped": len(skipped)}
        self.records = [r for r in self.records if r["epoch"] < epoch + 1] + [record]
        write_json_atomically(self.path, self.records)
        write_atomically(self.out / "loss_curve.png", lambda part: plot_history(self.records, part))
        record_from_history(self.records, self.batch_size, self.crops_before).save(self.out)
        note_skipped(self.out, skipped, epoch + 1)
        print(f"epoch {epoch + 1}/{self.epochs}: loss {record['loss']:.4f} val_loss {record['val_loss']:.4f} "
              f"val_psnr {record['val_psnr']:.2f} val_ssim {record['val_ssim']:.4f} ({record['seconds']:.0f} s)"
              + (f", {len(skipped)} unreadable skipped" if skipped else ""), flush=True)



def note_skipped(out: Path, skipped: dict[str, str], epoch: int | None = None) -> None:
    """Record unreadable files in the run folder, naming those not named before."""
    for entry in record_skipped(out, skipped, epoch):
        print(f"skipped {entry['reason']}")


class StepBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also resumes mid-epoch, where the run stopped, on the same batches.

    It backs up (the weights with the optimizer's state, and how far the epoch got) every
    `save_every` steps and after each epoch, and sets the dataset's epoch at each epoch start, so
    shuffles are reproducible. A resumed run starts its first epoch at the first batch not trained
    (`set_epoch(epoch, first_batch)`): it sees what an uninterrupted run sees, in the same order.
    Keras 3.15's own callback with save_freq=N saves mid-epoch but restores only the epoch number:
    the epoch starts over at batch 0 (its first batches trained twice), and its backups after a
    resume name epoch 0 until an epoch ends. A resumed epoch's logged loss averages its remaining
    steps only, and its seconds count from the resume.

    It goes first in the callback list: the step count is right before EpochLog logs it, and the
    backup of an epoch's end is written once every callback has handled that end (at the next
    epoch's start), so a crash can only make an epoch run again, never skip its log or checkpoint.

    A backup is the weights, in whichever of two slots the last one did not use, then
    training_metadata.json, written aside and renamed into place, naming that slot, how far training
    got and the history so far: the metadata's rename commits it, so a kill at any instant leaves the
    last backup whole. The first is the starting point, written when fit starts, so backup/ exists
    from then until training ends, when it is renamed away and deleted: a run folder with a history
    and no backup has finished.
    """

    SLOTS = ("slot0.weights.h5", "slot1.weights.h5")

    def __init__(self, backup_dir: Path, dataset, save_every: int | None = None, history: "EpochLog | None" = None):
        super().__init__(str(backup_dir))  # save_freq "epoch": this class does the saving
        self.dataset, self.save_every, self.history = dataset, save_every, history
        self.resume_step = self.first_batch = self.steps_done = 0
        self.epoch_ended, self.slot = False, None

    def _load_model(self):
        backup = read_backup(Path(self.backup_dir))
        if backup is None:
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(Path(self.backup_dir) / backup["weights"])  # with the optimizer's state
        self.model._initial_epoch, self.resume_step, self.slot = backup["epoch"], backup["steps_done"], backup["weights"]
        print(f"resuming from the backup: epoch {backup['epoch'] + 1}, after step {self.resume_step}")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # _load_model
        if self.slot is None:  # the starting point: from now on backup/ says the run is under way
            if not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            self._save_model()

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch, self.steps_done = epoch, 0
        if self.epoch_ended:
            self._save_model()
        self.first_batch, self.resume_step = self.resume_step, 0
        self.steps_done = self.first_batch
        self.dataset.set_epoch(epoch, self.first_batch)
        self.iterations_at_begin = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch, logs=None):
        self.steps_done = self.first_batch + batch + 1
        last = batch + 1 >= len(self.dataset)  # the end-of-epoch backup follows
        if self.save_every and self.steps_done % self.save_every == 0 and not last:
            self._save_model()

    def on_epoch_end(self, epoch, logs=None):
        if self.first_batch:  # a resumed epoch ends when its batches run out, before the count Keras
            # took at the start; TensorFlow then counts one step more (without data: nothing else moves)
            self.model.optimizer.iterations.assign(self.iterations_at_begin + self.steps_done - self.first_batch)
        self.epoch_ended = True

    def on_train_end(self, logs=None):
        remove_folder(Path(self.backup_dir))

    def _save_model(self):
        """The weights into the slot not in use, then the metadata that names it (the commit)."""
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        slot = self.SLOTS[1] if self.slot == self.SLOTS[0] else self.SLOTS[0]
        write_atomically(folder / slot, self.model.save_weights)
        write_json_atomically(self._training_metadata_path, {
            "epoch": self._current_epoch, "steps_done": self.steps_done, "weights": slot,
            "history": self.history.records if self.history is not None else None})
        self.slot = slot


def read_backup(folder: Path) -> dict | None:
    """A backup's metadata (epoch, steps_done, weights: its file, history: the records it kept), or
    None where the folder holds none whole. Backups from before the two slots are read too."""
    meta = read_json(folder / "training_metadata.json")
    if not isinstance(meta, dict) or "epoch" not in meta:
        return None
    meta = {"steps_done": 0, "weights": "latest.weights.h5", "history": None} | meta
    return meta if (folder / meta["weights"]).is_file() else None


def remove_folder(path: Path) -> None:
    """Delete a folder at once, as seen from outside: renamed aside, then deleted, so that a kill
    while deleting never leaves half of it in place."""
    if not path.exists():
        return
    doomed = path.with_name(PART_PREFIX + path.name)
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def cache_problem(what: str, size: int, max_gb: float, folder: Path) -> str | None:
    """Why a feature cache of `size` bytes should not be built in `folder`, or None: over `max_gb`,
    or over the disk's free space."""
    what = f"{what} = {size / 1e9:.3g} GB"
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    if size > max_gb * 1e9:
        return f"{what}, over --cache-max-gb {max_gb:g}"
    if size > free:
        return f"{what}, more than the {free / 1e9:.1f} GB free on {existing}"
    return None


class TimeBudget(keras.callbacks.Callback):
    """Fit training to a time budget on any hardware: the learning rate follows a cosine over the
    fraction of the budget spent (set at each epoch start, so keep epochs short), and training
    stops when the next epoch would overrun it. A resumed run counts the epochs already logged."""

    def __init__(self, minutes: float, lr: float, history: "EpochLog"):
        super().__init__()
        self.budget, self.lr, self.history = minutes * 60.0, lr, history

    def spent(self) -> float:
        return sum(r["seconds"] for r in self.history.records)

    def on_epoch_begin(self, epoch, logs=None):
        fraction = min(1.0, self.spent() / self.budget)
        cosine = 0.5 * (1.0 + math.cos(math.pi * fraction))
        self.model.optimizer.learning_rate = self.lr * (LR_FLOOR + (1.0 - LR_FLOOR) * cosine)

    def on_epoch_end(self, epoch, logs=None):
        last = self.history.records[-1]["seconds"] if self.history.records else 0.0
        if self.spent() + last > self.budget:
            self.model.stop_training = True


class BestDecoder(keras.callbacks.Callback):
    """Save the decoder's weights (only the decoder's, whatever model trains it) whenever the
    validation PSNR beats the best so far: the model folder always holds the best checkpoint. They
    go through an uncompiled copy: the decoder trained on cached features is the compiled model
    itself, whose save_weights would add the optimizer's state to the model folder's file."""

    def __init__(self, decoder, path: Path, best: float | None = None):
        super().__init__()
        self.decoder, self.path, self.best = decoder, path, best
        self.copy = type(decoder).from_config(decoder.get_config())  # uncompiled, unlike clone_model

    def on_epoch_end(self, epoch, logs=None):
        psnr = (logs or {}).get("val_psnr")
        if psnr is not None and (self.best is None or psnr > self.best):
            self.best = float(psnr)
            self.copy.set_weights(self.decoder.get_weights())
            write_atomically(self.path, self.copy.save_weights)


class SampleGrid(keras.callbacks.Callback):
    """Originals above reconstructions of a few validation images, one PNG per epoch."""

    def __init__(self, folder: Path, decoder, features, targets):
        super().__init__()
        self.folder, self.decoder, self.features, self.targets = folder, decoder, features, targets
        folder.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        outputs = keras.ops.convert_to_numpy(self.decoder(self.features, training=False))
        to_u8 = lambda a: (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)  # noqa: E731
        save_png(image_grid([list(to_u8(self.targets)), list(to_u8(outputs))]),
                 self.folder / f"epoch_{epoch + 1:03d}.png")


if __name__ == "__main__":
    try:
        main(args=ARGS)
    except KeyboardInterrupt:
        sys.exit(130)
