"""Gradio demo: see what a VGG16 layer keeps of an image, by reconstructing the image from it.

    python app.py [--model REPO_OR_DIR] [--revision REV] [--host 127.0.0.1] [--port 7860] [--share] [--precision auto]
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 RECON_MODEL=user/repo python app.py   # a Space, Docker

Tabs: Upload (input vs reconstruction, error map, metrics, download), Webcam (live
reconstruction with PSNR/SSIM and fps), Features (strongest channels of the layer), Ablation
(reconstruct from altered features), Refine (feature matching from the decoder's guess, streamed
step by step), Layers (the same photo from every bundled layer, with a quality-by-depth plot) and
Model (what is loaded, and how well it does on held-out photos). The handlers at the top are plain
functions over `recon.Reconstructor`, so they can be tested and benchmarked without a browser; one
small builder per tab wires them into a `gr.Blocks`. Every input change re-runs what depends on it
and the newest input wins (`trigger_mode="always_last"`); expected errors reach the page as one
`gr.Error` toast and the server log as one line. Importing this module loads no model and touches
no network.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo must work offline: no telemetry calls
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's own log lines; 0 shows them all

from recon.precision import PRECISIONS  # noqa: E402  (these two import no TensorFlow)
from recon.startup import start_tensorflow_quietly  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("RECON_MODEL"),
                        help="Hub repo id or local model folder (default: $RECON_MODEL, else the bundled "
                             "models/vgg16-block3_conv3)")
    parser.add_argument("--revision", default=os.environ.get("RECON_REVISION"),
                        help="Hub revision (branch, tag or commit) for --model (default: $RECON_REVISION)")
    # None leaves host and port to Gradio, which reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (as Hugging
    # Face Spaces and Docker set-ups set them) and otherwise serves on 127.0.0.1:7860
    parser.add_argument("--host", default=None, help="address to serve on, 0.0.0.0 for all (default: "
                                                     "$GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs network)")
    parser.add_argument("--precision", default="auto", choices=[p for p in PRECISIONS if p not in ("int8", "openvino")],
                        help="what the models compute in (default: auto). auto: float16 on CUDA GPUs; on a CPU, "
                             "the int8 file of each model folder that has one where the CPU has VNNI/AMX "
                             "(training.quantize), with the rest of the decoder in bfloat16 on CPUs with "
                             "AVX512-BF16/AMX (about 3x float32 in all) and float32 elsewhere; the other folders "
                             "bfloat16 or float32. int8 and openvino are not offered on their own: only some "
                             "folders passed the int8 check. float32 shows each model's own scores")
    return parser.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answer now, before Gradio and TensorFlow load (seconds)
    start_tensorflow_quietly()

import atexit  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from recon import ImageLoadError, ModelFolderError, Reconstructor, load_image  # noqa: E402
from recon import features as F  # noqa: E402
from recon.config import NETWORK_NAMES  # noqa: E402
from recon.imageio import MAX_FILE_BYTES, to_uint8  # noqa: E402
from recon.metrics import ERROR_MAP_MAX, error_map, image_metrics  # noqa: E402
from recon.metrics import psnr as metric_psnr  # noqa: E402
from recon.refine import feature_matching  # noqa: E402
from recon.training_record import short_count  # noqa: E402

ROOT = Path(__file__).resolve().parent
MODELS_DIR = ROOT / "models"
BUNDLED_MODEL = MODELS_DIR / "vgg16-block3_conv3"
EXAMPLES_DIR = ROOT / "examples"
MAX_NATIVE_SIDE = 1024  # "own size" above this is scaled down: a 20-megapixel photo would take minutes on CPU
FPS_WINDOW_S = 3.0  # the webcam fps is measured over the frames of the last few seconds
NO_UPLOAD = "Upload an image in the Upload tab first."  # what every tab but Upload says without one
log = logging.getLogger("recon.app")
RESOLUTIONS = [("trained size (square crop)", "trained"), ("whole image at the model's scale", "scaled"),
               ("the image's own size", "native")]
MAX_REFINE_STEPS = 300  # about 2.5 minutes at block3_conv3 on 2 CPU cores
REFINE_STREAM_EVERY = 2  # steps between streamed frames; Stop takes effect at the next frame, so keep it short
ABLATIONS = [("keep only the K strongest channels", "top_k"), ("zero one channel", "zero_channel"),
             ("quantize to n bits", "quantize")]


# -- errors: one way to the page --------------------------------------------------------------------
EXPECTED_ERRORS = (ImageLoadError, ModelFolderError, ValueError)  # the visitor's input, not a bug


def page_errors(outputs: int = 0, status: int | None = None):
    """Decorate a handler so that its failures reach the page one way: a toast with the reason.

    Expected failures (gr.Error, a file that cannot be read, an unusable image) are logged as one
    line; anything else is a bug, logged with its traceback and shown by type and message. A handler
    with a status line (its `status`-th of `outputs` outputs) does not fail its event: it clears its
    other outputs and says what went wrong in the status line, and `toast_failures` raises the toast
    in a follow-up event. Gradio drops a trigger deferred by trigger_mode="always_last" when the
    running event fails, so failing would lose the visitor's next upload. Handlers without a status
    line raise gr.Error.
    """
    def decorate(handler):
        def failed(e: Exception):
            if isinstance(e, (gr.Error, *EXPECTED_ERRORS)):
                message = e.message if isinstance(e, gr.Error) else str(e)
                log.info("%s: %s", handler.__name__, message)
            else:
                message = f"Something went wrong ({type(e).__name__}: {e})."
                log.exception("%s failed", handler.__name__)
            if status is None:
                raise gr.Error(message, print_exception=False) from None
            return tuple(f"{FAILED}{message}" if i == status else None for i in range(outputs))

        if inspect.isgeneratorfunction(handler):
            @functools.wraps(handler)
            def streamed(*args, **kwargs):
                try:
                    yield from handler(*args, **kwargs)
                except Exception as e:
                    yield failed(e)
            return streamed

        @functools.wraps(handler)
        def wrapped(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except Exception as e:
                return failed(e)
        return wrapped
    return decorate


FAILED = "⚠ "  # how a status line that reports a failure starts


def raise_failure(status: str | None) -> None:
    """The follow-up of an event whose status line reports a failure: the toast (gr.Error)."""
    if status and str(status).startswith(FAILED):
        raise gr.Error(str(status)[len(FAILED):], print_exception=False)


def toast_failures(event, status) -> None:
    """After `event`, show a failure its status line reports as a red toast. The follow-up event
    has no outputs, so its failure marks nothing on the page and defers no visitor's input."""
    event.then(raise_failure, [status], None, api_visibility="private", show_progress="hidden")


def percent(fraction: float) -> str:
    """A share as a percentage that never rounds to a claim it is not (99.97% is not "100%")."""
    if 0 < fraction < 0.001:
        return "<0.1%"
    if 0.999 < fraction < 1:
        return ">99.9%"
    return f"{fraction:.1%}"


# -- handlers: plain functions over a Reconstructor ---------------------------------------------
def read_upload(path) -> np.ndarray:
    """The project's safe loader on the uploaded file, its failures turned into a page message."""
    if not path:
        raise gr.Error("Upload an image first.")
    try:
        return load_image(path)
    except ImageLoadError as e:  # the message names Gradio's temp path; the file's own name is enough
        raise gr.Error(f"Cannot use this file: {str(e).replace(str(path), Path(path).name)}") from None


def inference_size(model: Reconstructor, image: np.ndarray, resolution: str):
    """`reconstruct`'s size argument for a resolution choice (RESOLUTIONS):

    "trained": the center square at the trained size; "scaled": the whole image with its short side
    at the trained size (aspect kept, so nothing is cropped); "native": the image's own size. The
    long side is capped at MAX_NATIVE_SIDE.
    """
    if resolution not in ("scaled", "native"):
        return "trained"
    h, w = image.shape[:2]
    scale = model.config.image_size / min(h, w) if resolution == "scaled" else 1.0
    scale = min(scale, MAX_NATIVE_SIDE / max(h, w))
    return (max(1, round(h * scale)), max(1, round(w * scale)))


def rounded(metrics: dict) -> dict:
    """For display: 4 decimals (6 for MSE); an undefined value (LPIPS of a tiny image) as null."""
    return {k: None if v != v else round(float(v), 6 if k == "mse" else 4) for k, v in metrics.items()}


def error_heatmap(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    return F.colormap(error_map(reference, test), vmin=0.0, vmax=ERROR_MAP_MAX)


def reconstruct_upload(model: Reconstructor, path, resolution: str = "trained"):
    """Upload tab: (input, reconstruction), error map, metrics, a PNG to download, a status line."""
    image = read_upload(path)
    size = inference_size(model, image, resolution)
    start = time.perf_counter()
    try:
        rec = model.reconstruct(image, size)
    except ValueError as e:
        raise gr.Error(f"Cannot reconstruct this image: {e}") from None
    seconds = time.perf_counter() - start
    x, y = to_uint8(rec.input), to_uint8(rec.output)
    download = DOWNLOADS.path(f"{Path(str(path)).stem[:60] or 'image'}_{model.config.layer}_reconstruction.png")
    from PIL import Image
    Image.fromarray(y).save(download)
    h, w = image.shape[:2]
    metrics = rec.metrics()
    status = (f"Reconstructed at {y.shape[1]}×{y.shape[0]} (upload {w}×{h}) in {seconds:.2f} s "
              f"from {model.config.layer} features of shape {tuple(rec.features.shape)}, in {model.precision_name}."
              + size_note(model, image, resolution, size, y.shape) + undefined_metrics_note(metrics))
    return (x, y), error_heatmap(rec.input, rec.output), rounded(metrics), str(download), status


class DownloadFolder:
    """Where the Upload tab's reconstructions wait to be downloaded: one `recon_*` folder in TMPDIR per
    process, holding the newest `keep` (one subfolder each, so that names never collide), deleted
    at exit. Gradio copies a returned file into its own cache when the event ends (and cleans that
    itself: delete_cache), so only the last few need to stay."""

    def __init__(self, keep: int = 32):
        self.keep, self.root, self.kept = keep, None, []
        self.lock = threading.Lock()

    def path(self, name: str) -> Path:
        """A new path for a file called `name`; the oldest files beyond `keep` are deleted."""
        with self.lock:
            if self.root is None or not self.root.is_dir():
                self.root = Path(tempfile.mkdtemp(prefix="recon_"))
                atexit.register(shutil.rmtree, self.root, ignore_errors=True)
            self.kept.append(Path(tempfile.mkdtemp(dir=self.root)))
            while len(self.kept) > self.keep:
                shutil.rmtree(self.kept.pop(0), ignore_errors=True)
            return self.kept[-1] / name


DOWNLOADS = DownloadFolder()


def size_note(model: Reconstructor, image: np.ndarray, resolution: str, size, shape) -> str:
    """Why the reconstruction's `shape` is not quite what the resolution choice says, if it is not
    (`size`: what `inference_size` asked for)."""
    if resolution not in ("scaled", "native"):
        return ""
    h, w = image.shape[:2]
    notes = []
    if max(h, w) * (model.config.image_size / min(h, w) if resolution == "scaled" else 1) > MAX_NATIVE_SIDE:
        notes.append(f"the long side is capped at {MAX_NATIVE_SIDE} px")
    if tuple(shape[:2]) != tuple(size):
        notes.append(f"sides are rounded to multiples of the layer's stride, {model.config.stride} px")
    return "".join(f" {note[0].upper()}{note[1:]}." for note in notes)


def undefined_metrics_note(metrics: dict) -> str:
    """Why a metric shows as null: the image is smaller than what it needs."""
    from recon.lpips import MIN_SIZE
    from recon.metrics import SSIM_MIN_SIZE
    needs = {"ssim": SSIM_MIN_SIZE, "lpips": MIN_SIZE["alex"]}
    missing = [f"{name.upper()} needs at least {needs[name]} px a side" for name in needs
               if name in metrics and metrics[name] != metrics[name]]
    return f" This image is too small for some metrics: {'; '.join(missing)}." if missing else ""


def reconstruct_frame(model: Reconstructor, frame, stats: dict | None = None):
    """Webcam tab, one frame at the trained size: reconstruction, a PSNR/SSIM/fps line, new stats.

    fps counts the frames this session actually got back over the last few seconds; frames the
    browser sent while one was running were already dropped by Gradio (it keeps only the newest).
    """
    stats = dict(stats or {})
    if frame is None:
        return None, "Waiting for the camera…", stats
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    frame = to_uint8(frame[..., :3]) if frame.dtype != np.uint8 else frame[..., :3]
    start = time.perf_counter()
    rec = model.reconstruct(frame, "trained")
    m = image_metrics(rec.input, rec.output, lpips_net=None)  # LPIPS would cost a network pass per frame
    now = time.perf_counter()
    times = [t for t in stats.get("times", []) if now - t <= FPS_WINDOW_S] + [now]
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    stats = {"times": times, "frames": stats.get("frames", 0) + 1, "fps": fps}
    line = (f"PSNR {m['psnr']:.2f} dB · SSIM {m['ssim']:.3f} · {fps:.1f} fps "
            f"({(now - start) * 1000:.0f} ms/frame) · frame {stats['frames']}")
    return to_uint8(rec.output), line, stats


LIVE_FRAME_MAX_BYTES = 2 * 1024 * 1024  # a 224 px JPEG is about 15 KB; anything near this is not a camera frame
LIVE_FRAME_MAX_SIDE = 2048
# frames the page keeps in flight. In Chromium on 2 cores (benchmarks/webcam_browser.py --env ...): 1 gave
# 16.1 to 17.4 frames/s shown at 67 to 83 ms median latency with the machine to itself, 2 gave 17.8 at 133
# ms; with other work on the machine 1 gave 8.9 to 11.4 frames/s, 2 gave 6.5 to 7.6
LIVE_IN_FLIGHT = int(os.environ.get("RECON_LIVE_IN_FLIGHT", 1))
LIVE_JPEG_QUALITY = 90  # the reconstruction sent back: about 16 KB at 224 px, 0.2 ms to encode


def decode_live_frame(data_url) -> np.ndarray:
    """A camera frame as the Webcam tab sends it (a JPEG or PNG data URL) -> (H, W, 3) uint8.

    Raises:
        ValueError: not a JPEG/PNG data URL, over LIVE_FRAME_MAX_BYTES, larger than
            LIVE_FRAME_MAX_SIDE a side, or not a readable image (recon.ImageLoadError).
    """
    if not isinstance(data_url, str) or not data_url.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")):
        raise ValueError("a webcam frame must be a JPEG or PNG data URL")
    if len(data_url) > LIVE_FRAME_MAX_BYTES * 4 // 3 + 64:
        raise ValueError(f"a webcam frame must be under {LIVE_FRAME_MAX_BYTES // 2**20} MB")
    try:
        payload = base64.b64decode(data_url.split(",", 1)[1], validate=True)
    except ValueError:
        raise ValueError("a webcam frame's data URL is not valid base64") from None
    frame = load_image(payload, max_pixels=LIVE_FRAME_MAX_SIDE ** 2)
    if max(frame.shape[:2]) > LIVE_FRAME_MAX_SIDE:
        raise ValueError(f"a webcam frame must be at most {LIVE_FRAME_MAX_SIDE} px a side")
    return frame


def jpeg_data_url(image: np.ndarray, quality: int = LIVE_JPEG_QUALITY) -> str:
    """(H, W, 3) uint8 or [0, 1] float -> a JPEG data URL, for an <img> to show without a file or a request."""
    buffer = io.BytesIO()
    PILImage.fromarray(to_uint8(image)).save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def live_frame(model: Reconstructor, data_url: str, with_ssim: bool = False) -> dict:
    """Webcam tab, one frame from the page's own loop: the reconstruction as a JPEG data URL, its PSNR
    (and SSIM when asked: 20 ms on 2 cores at 224, half the model's time, so the page asks once a
    second), the model's trained side (what the page should send next) and the server's time in ms
    per stage (decode, model, metrics, encode), which the page shows beside its own.

    Raises:
        ValueError: a frame `decode_live_frame` refuses.
    """
    start = time.perf_counter()
    frame = decode_live_frame(data_url)
    decoded = time.perf_counter()
    rec = model.reconstruct(frame, "trained")
    reconstructed = time.perf_counter()
    psnr = metric_psnr(rec.input, rec.output)
    ssim = image_metrics(rec.input, rec.output, lpips_net=None)["ssim"] if with_ssim else None
    measured = time.perf_counter()
    image = jpeg_data_url(rec.output)
    done = time.perf_counter()
    return {"image": image, "psnr": psnr, "ssim": ssim, "size": model.config.image_size,
            "ms": {"decode": (decoded - start) * 1000, "model": (reconstructed - decoded) * 1000,
                   "metrics": (measured - reconstructed) * 1000, "encode": (done - measured) * 1000}}


def encode_upload(model: Reconstructor, path, resolution: str):
    """The (model input, features) pair that the feature viewer and the ablations work on."""
    image = read_upload(path)
    try:
        x = model.prepare(image, inference_size(model, image, resolution))
    except ValueError as e:
        raise gr.Error(f"Cannot use this image: {e}") from None
    return x, model.encode(x)


def clamp_channel(model: Reconstructor, channel) -> int:
    channels = model.config.channels
    try:
        channel = int(channel)
    except (TypeError, ValueError):
        raise gr.Error(f"Channel must be a whole number from 0 to {channels - 1}.") from None
    if not 0 <= channel < channels:
        raise gr.Error(f"Channel {channel} does not exist: {model.config.layer} has channels 0 to {channels - 1}.")
    return channel


def feature_view(model: Reconstructor, path, resolution: str = "trained", top_n: int = 16, channel: int | None = None):
    """Features tab: the top-N channels as captioned tiles, one channel large (default: the strongest),
    a summary line, and the channel shown. `tile_index(tiles, channel)` says which tile to highlight."""
    if channel is not None:
        channel = clamp_channel(model, channel)
    _, feats = encode_upload(model, path, resolution)
    means = F.channel_means(feats)
    if channel is None:
        channel = int(F.top_channels(feats, 1)[0])
    tiles = [(tile, f"ch {c} · mean {mean:.3g}") for tile, c, mean in F.channel_tiles(feats, int(top_n))]
    one = feats[..., channel]
    rank = int(np.sum(means > means[channel])) + 1
    h, w, c = feats.shape
    summary = (f"**{model.config.layer}** features: {h} × {w} × {c} (stride {model.config.stride}) · "
               f"sparsity **{percent(F.sparsity(feats))}** zeros after ReLU  \n"
               f"Channel {channel}: mean {means[channel]:.3g} (rank {rank} of {c}), max {one.max():.3g}, "
               f"{percent(float(np.mean(one == 0)))} zeros")
    return tiles, F.channel_image(feats, channel, size=384), summary, channel


def tile_index(tiles, channel: int) -> int | None:
    """Which tile of the gallery shows `channel` (None: it is not among the strongest shown)."""
    return next((i for i, (_, caption) in enumerate(tiles) if caption.startswith(f"ch {channel} ")), None)


def tile_channel(caption) -> int:
    """The channel a clicked tile shows, from its caption ("ch 12 · mean ..."); 0 for anything else."""
    match = re.match(r"ch (\d+)", caption if isinstance(caption, str) else "")
    return int(match.group(1)) if match else 0


def highlighted(tiles, channel: int) -> gr.Gallery:
    """The gallery of `tiles` with `channel`'s tile highlighted (none if it is not among them)."""
    return gr.Gallery(tiles, selected_index=tile_index(tiles, channel))


def ablate(model: Reconstructor, path, resolution: str = "trained", mode: str = "top_k", k: int = 8,
           channel: int = 0, bits: int = 2):
    """Ablation tab: reconstructions from the unaltered and the altered features, what changed, metrics."""
    x, feats = encode_upload(model, path, resolution)
    if mode == "top_k":
        k = int(np.clip(int(k), 0, feats.shape[-1]))
        altered, what = F.keep_top_k(feats, k), f"kept the {k} strongest of {feats.shape[-1]} channels"
    elif mode == "zero_channel":
        channel = clamp_channel(model, channel)
        altered, what = F.zero_channel(feats, channel), f"zeroed channel {channel}"
    elif mode == "quantize":
        bits = int(np.clip(int(bits), 1, 16))
        altered, what = F.quantize(feats, bits), f"quantized to {bits} bit{'s' if bits > 1 else ''} per value"
    else:
        raise gr.Error(f"Unknown ablation {mode!r}; choose one of {[m for _, m in ABLATIONS]}.")
    plain, changed = model.decode(feats), model.decode(altered)
    metrics = {"ablation": what,
               "unaltered": rounded(image_metrics(x, plain)), "altered": rounded(image_metrics(x, changed)),
               "features_changed": round(float(np.mean(altered != feats)), 4)}
    return to_uint8(plain), to_uint8(changed), error_heatmap(plain, changed), metrics


def refine_upload(model: Reconstructor, path, steps: int = 100, every: int = REFINE_STREAM_EVERY,
                  learning_rate: float = 2e-3, stop: threading.Event | None = None):
    """Refine tab, streamed: (decoder's guess, refined image, change map, status, metrics) every `every` steps.

    Runs at the trained size whatever the Upload tab's resolution: each step is a forward and a
    backward pass through the encoder, so large images would take minutes. Once `stop` is set, the
    next frame is the last, and its status says where it stopped.
    """
    image = read_upload(path)
    steps = int(np.clip(int(steps), 1, MAX_REFINE_STEPS))
    rec = model.reconstruct(image)
    guess = to_uint8(rec.output)
    first = rounded(rec.metrics())
    start = time.perf_counter()
    try:
        for step, refined, error in feature_matching(model, rec.features, rec.output, steps, learning_rate, every):
            now = rounded(image_metrics(rec.input, refined))
            stopping = stop is not None and stop.is_set() and step < steps
            status = (("Stopped at step" if stopping else "Step") + f" **{step} / {steps}** "
                      f"({time.perf_counter() - start:.0f} s): feature error {error:.3g} of the features' energy, "
                      f"PSNR {first['psnr']:.2f} → **{now['psnr']:.2f} dB**, "
                      f"SSIM {first['ssim']:.3f} → **{now['ssim']:.3f}**")
            metrics = {"step": step, "relative_feature_error": round(error, 6),
                       "decoder": first, "refined": now}
            yield guess, to_uint8(refined), error_heatmap(rec.output, refined), status, metrics
            if stopping:
                return
    except NotImplementedError as e:
        raise gr.Error(f"Cannot refine: {e}") from None


def compare_layers(models: list[Reconstructor], path, resolution: str = "trained"):
    """Layers tab: the photo reconstructed by each model, shallow layer to deep.

    Returns gallery tiles (the model input first, then one per layer captioned with PSNR, SSIM and
    LPIPS), a quality-by-depth figure, and a markdown table of the same numbers.
    """
    image = read_upload(path)
    models = sorted(models, key=lambda m: m.config.depth_order)
    several = len({m.config.backbone for m in models}) > 1  # then each layer is named with its network
    tiles, rows = [], []
    for model in models:
        rec = model.reconstruct(image, inference_size(model, image, resolution))
        m = rounded(rec.metrics())
        if not tiles:
            tiles.append((to_uint8(rec.input), f"input {rec.input.shape[1]}×{rec.input.shape[0]}"))
        c = model.config
        layer = f"{NETWORK_NAMES[c.backbone]} {c.layer}" if several else c.layer
        tiles.append((to_uint8(rec.output), f"{layer} · {shown(m['psnr'], '.1f')} dB · SSIM {shown(m['ssim'], '.3f')} "
                                            f"· LPIPS {shown(m['lpips'], '.3f')} · {training_tag(model)}"))
        rows.append({"layer": layer, "stride": c.stride, "channels": c.channels, **m,
                     "training": training_tag(model)})
    table = ["| layer | stride | channels | PSNR (dB) | SSIM | LPIPS ↓ | training |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['layer']} | {r['stride']} | {r['channels']} | {shown(r['psnr'], '.2f')} | {shown(r['ssim'], '.3f')} "
              f"| {shown(r['lpips'], '.3f')} | {r['training']} |" for r in rows]
    if any(m.training is None or not m.training.plateaued for m in models):
        table += ["", "A model *still improving* had not reached its plateau when training stopped: part of what "
                      "its reconstruction misses is undertraining, not what the layer has lost."]
    if any(r[k] is None for r in rows for k in ("psnr", "ssim", "lpips")):
        from recon.lpips import MIN_SIZE
        from recon.metrics import SSIM_MIN_SIZE
        table += ["", f"n/a: this input is too small for the metric (SSIM needs {SSIM_MIN_SIZE} px a side, "
                      f"LPIPS {MIN_SIZE['alex']} px)."]
    return tiles, quality_by_depth(rows), "\n".join(table)


def compare_networks(models: list[Reconstructor], path, resolution: str = "trained"):
    """Layers tab, same stride, different network: at each stride that models of two or more networks
    share, the photo reconstructed from each network's deepest layer at that stride: which keeps more.

    Returns gallery tiles (one per model, captioned with stride, network, layer and the metrics) and
    a markdown table of the same numbers with each stride's closest reconstruction named; none and a
    sentence saying why where no stride is shared.
    """
    image = read_upload(path)
    by_stride: dict[int, dict[str, Reconstructor]] = {}
    for model in sorted(models, key=lambda m: m.config.depth_order):  # the deepest layer at a stride wins
        by_stride.setdefault(model.config.stride, {})[model.config.backbone] = model
    shared = {stride: nets for stride, nets in sorted(by_stride.items()) if len(nets) > 1}
    if not shared:
        networks = sorted({NETWORK_NAMES[m.config.backbone] for m in models})
        return [], (f"No stride is shared by models of two networks (models of {', '.join(networks)} here): "
                    "add models of other networks to models/ to compare them.")
    tiles = []
    table = ["| stride | network | layer | channels | PSNR (dB) | SSIM | LPIPS ↓ | training |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for stride, nets in shared.items():
        rows = []
        for model in nets.values():
            c, rec = model.config, model.reconstruct(image, inference_size(model, image, resolution))
            m, network = rounded(rec.metrics()), NETWORK_NAMES[c.backbone]
            rows.append((network, c.layer, m))
            tiles.append((to_uint8(rec.output),
                          f"stride {stride} · {network} {c.layer} · {shown(m['psnr'], '.1f')} dB · SSIM "
                          f"{shown(m['ssim'], '.3f')} · {training_tag(model)}"))
            table.append(f"| {stride} | {network} | {c.layer} | {c.channels} | {shown(m['psnr'], '.2f')} "
                         f"| {shown(m['ssim'], '.3f')} | {shown(m['lpips'], '.3f')} | {training_tag(model)} |")
        scored = [r for r in rows if r[2]["psnr"] is not None]
        if scored:
            network, layer, m = max(scored, key=lambda r: r[2]["psnr"])
            verdicts.append(f"stride {stride}: {network} ({layer}) keeps the most of this photo, {m['psnr']:.2f} dB")
    notes = ["", "Closest reconstruction per stride: " + "; ".join(verdicts) + "." if verdicts else "",
             "", "A comparison of networks is fair only between decoders trained alike: the training column says "
                 "how much stands behind each."]
    return tiles, "\n".join(table + notes)


def training_tag(model: Reconstructor) -> str:
    """How much training stands behind a model: "621k crops, still improving", "90k crops, plateaued"."""
    record = model.training
    if record is None:
        return "training not recorded"
    state = {True: "plateaued", False: "still improving", None: "plateau not measured"}[record.plateaued]
    return f"{short_count(record.crops_seen)} crops, {state}"


def shown(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def quality_by_depth(rows: list[dict]):
    """PSNR (left axis) and SSIM, LPIPS (right axis, 0 to 1) against the layer, as a matplotlib Figure.
    Built without pyplot, whose global state is not safe across Gradio's worker threads."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6.4, 2.8), layout="constrained")
    ax = fig.add_subplot()
    x = range(len(rows))
    nan = lambda v: float("nan") if v is None else v  # noqa: E731
    ax.plot(x, [nan(r["psnr"]) for r in rows], "o-", color="tab:blue", label="PSNR (dB)")
    ax.set_ylabel("PSNR (dB)", color="tab:blue")
    ax.set_xticks(list(x), [r["layer"] for r in rows], fontsize=8)
    right = ax.twinx()
    right.plot(x, [nan(r["ssim"]) for r in rows], "s--", color="tab:green", label="SSIM")
    right.plot(x, [nan(r["lpips"]) for r in rows], "^:", color="tab:red", label="LPIPS (lower is better)")
    right.set_ylim(0, 1)
    right.set_ylabel("SSIM, LPIPS")
    lines = ax.get_lines() + right.get_lines()  # one legend above the axes, where it covers no point
    fig.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="outside upper center", ncols=3)
    return fig


# -- model panel ----------------------------------------------------------------------------------
MAX_CARD_BYTES = 1_000_000  # a model card is a page of markdown; more is not read
MAX_FRONT_MATTER_BYTES = 64_000


def read_model_card(folder: Path | None) -> tuple[dict, str]:
    """README.md of a model folder -> (YAML front matter, markdown body); empty when absent.

    Line by line, in time linear in the card's length (a regular expression over it backtracked:
    32 kB took seconds). Front matter that is not a YAML mapping, or is over MAX_FRONT_MATTER_BYTES,
    counts as none; the body is cut at MAX_CARD_BYTES.
    """
    if folder is None or not (folder / "README.md").is_file():
        return {}, ""
    try:
        with open(folder / "README.md", encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_CARD_BYTES)
    except OSError:
        return {}, ""
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        return {}, text
    front, body = "\n".join(lines[1:end]), "\n".join(lines[end + 1:])
    if len(front) > MAX_FRONT_MATTER_BYTES:
        return {}, body
    import yaml
    try:
        meta = yaml.safe_load(front) or {}
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: an int of over 4300 digits
        meta = {}
    return (meta if isinstance(meta, dict) else {}), body


def card_section(body: str, title: str) -> str:
    """The text under the first markdown heading that contains `title` (case-insensitive), up to the
    next heading of one to six #s; linear in the body's length."""
    title, section = title.lower(), None
    for line in body.split("\n"):
        if section is None:
            if line.startswith("#") and title in line.lower():
                section = []
            continue
        hashes = len(line) - len(line.lstrip("#"))
        if 1 <= hashes <= 6 and line[hashes:hashes + 1] == " ":
            break
        section.append(line)
    return "\n".join(section).strip() if section else ""


def read_metrics_summary(folder: Path | None) -> dict:
    """metrics_summary.json of a model folder (`training.evaluate`), or {} where absent or not a JSON
    object. Its values are untrusted: `summary_number` checks each one before use."""
    import json
    path = folder / "metrics_summary.json" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def summary_number(value) -> float | None:
    """A finite number from a metrics summary, else None (a string, a list, NaN, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e15 <= value <= 1e15:
        return None
    return float(value)


def random_weights_banner(model: Reconstructor | None) -> str:
    if model is None or model.config.encoder_weights != "random":
        return ""
    return ('<div style="background:#b91c1c;color:white;padding:6px 12px;border-radius:6px;'
            'font-weight:bold">⚠ random weights: tests only. This encoder was never trained; '
            'its reconstructions mean nothing.</div>')


def model_info(model: Reconstructor, name: str, folder: Path | None) -> str:
    """Model tab: what is loaded (config), how it was trained and scored (model card, metrics)."""
    c = model.config
    lines = [f"### {name}", "",
             "| Setting | Value |", "|---|---|",
             f"| Backbone | {c.backbone} |", f"| Layer | {c.layer} (stride {c.stride}, {c.channels} channels) |",
             f"| Encoder weights | {c.encoder_weights}{' (**random: tests only**)' if c.encoder_weights == 'random' else ''} |",
             f"| Decoder | {model.decoder.count_params():,} parameters, width {c.decoder_width}, "
             f"{c.num_res_blocks} residual blocks, upsampling {c.upsample} |",
             f"| Trained size | {c.image_size}×{c.image_size} |",
             f"| Training | {model.training.summary() if model.training else 'not recorded (no training.json)'} |",
             f"| Precision | {model.precision_name} (inputs, outputs and metrics in float32/float64) |",
             f"| Source | {shown_path(folder) if folder is not None else name} |"]
    meta, body = read_model_card(folder)
    for key, value in meta.items():
        if isinstance(value, (str, int, float)) or (isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)):
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"| {key} | {str(shown).replace('|', '/')} |")
    summary = read_metrics_summary(folder)
    rows = {key: (summary_number(summary[key].get("mean")), summary_number(summary[key].get("std")))
            for key in ("psnr", "ssim", "lpips", "mse") if isinstance(summary.get(key), dict)}
    if rows.get("psnr", (None,))[0] is not None:
        count, data, size = summary.get("count"), summary.get("data"), summary.get("size")
        lines += ["", "**Held-out metrics** " + (f"({count} images from "
                                                 f"`{Path(data if isinstance(data, str) else '?').name[:100]}` at size "
                                                 f"{size if isinstance(size, (int, str)) and len(str(size)) < 20 else '?'})"
                                                 if isinstance(count, int) and not isinstance(count, bool) else ""), "",
                  "| metric | mean | std |", "|---|---|---|"]
        for key, (mean, std) in rows.items():
            lines.append(f"| {key.upper()} | {'?' if mean is None else format(mean, '.4g')} | "
                         f"{'?' if std is None else format(std, '.3g')} |")
    else:
        lines += ["", "_No held-out metrics (metrics_summary.json) in this model folder._"]
    training = card_section(body, "training data") or card_section(body, "training")
    lines += ["", "**Training data**", "", training if training else "_Not described (no model card)._"]
    return "\n".join(lines)


def shown_path(folder: Path) -> str:
    """A folder as visitors may see it: relative to the app, never the server's absolute paths."""
    folder = Path(folder).resolve()
    for base in (ROOT, Path.cwd()):
        if folder.is_relative_to(base):
            return str(folder.relative_to(base))
    return folder.name


# -- models: which ones, loaded lazily ---------------------------------------------------------
@dataclass
class ModelStore:
    """The models the page can pick from, by name; folders load on first use and stay loaded."""

    folders: dict[str, Path | None] = field(default_factory=dict)  # None: loaded from the Hub
    loaded: dict[str, Reconstructor] = field(default_factory=dict)
    default: str | None = None
    notice: str = ""  # shown at the top of the page: a model that could not be pulled or loaded
    problem: str = ""  # the full reason behind the notice, for the server log (paths, advice)
    precision: str = "float32"  # asked of every model loaded here; "auto" resolves per model (recon.precision)
    skipped: dict[str, str] = field(default_factory=dict)  # folders that could not be loaded: name -> reason
    lock: threading.Lock = field(default_factory=threading.Lock)
    configs: dict = field(default_factory=dict)  # name -> ReconConfig of each local folder, read at start

    @property
    def names(self) -> list[str]:
        return list(self.folders)

    def choices(self) -> list[tuple[str, str]]:
        """The picker's (label, name) pairs, grouped by network, shallow to deep within each; a model
        from the Hub or given in code first, as it is."""
        def key(name):
            config = self.configs.get(name)
            return (0, ()) if config is None else (1, config.depth_order)
        return [(f"{NETWORK_NAMES[self.configs[n].backbone]} · {n}" if n in self.configs else n, n)
                for n in sorted(self.names, key=key)]

    def networks(self) -> list[str]:
        """The networks (backbones) of the local folders, in NETWORK_NAMES' order (one's own model last)."""
        return sorted({c.backbone for c in self.configs.values()}, key=list(NETWORK_NAMES).index)

    def get(self, name: str | None) -> Reconstructor:
        """The model `name` (default: the default one), loaded on first use.

        Raises:
            gr.Error: no such model, or its folder cannot be loaded (the reason is kept in
                `skipped`): a bad folder fails its own requests, never the app.
        """
        name = name or self.default
        if name not in self.folders:  # the picker's label, as a page script reads it from the input box
            name = dict(self.choices()).get(name, name)
        if name not in self.folders:
            raise gr.Error(f"No model named {name!r}" if name else f"No model available. {self.notice}")
        with self.lock:
            if name not in self.loaded:
                try:
                    self.loaded[name] = Reconstructor.from_pretrained(self.folders[name], precision=self.precision)
                except Exception as e:  # ModelFolderError; anything else is a bug, but still one folder's
                    reason = str(e) if isinstance(e, ModelFolderError) else f"{type(e).__name__}: {e}"
                    self.skipped[name] = reason
                    raise gr.Error(f"Cannot load model {name}: {reason}") from None
                self.skipped.pop(name, None)
            return self.loaded[name]

    def one_per_layer(self, network: str | None = None) -> list[Reconstructor]:
        """The local models, the first of each layer (of each network, or of `network` alone) that
        loads (the bundled default wins its layer); a folder that does not load is left out, and
        named in `skipped`."""
        from recon import ConfigError, ReconConfig
        known, layers = set(self.skipped), {}
        for name, folder in self.folders.items():
            if folder is None:
                continue
            try:  # the config alone says the layer: only the first model of each layer is loaded
                config = ReconConfig.load(folder / "config.json")
                if network not in (None, config.backbone):
                    continue
                layers.setdefault((config.backbone, config.layer), []).append(name)
            except ConfigError as e:
                self.skipped[name] = str(e)
        models = []
        for names in layers.values():
            for name in names:
                with contextlib.suppress(gr.Error):
                    models.append(self.get(name))
                    break
        for name in set(self.skipped) - known:
            log.warning("model %s skipped: %s", name, self.skipped[name])
        return models


def looks_like_path(model: str) -> bool:
    """A --model that names a folder (that does not exist) rather than a Hub repo id "user/name"."""
    text = str(model)
    first = Path(text).parts[0] if Path(text).parts else ""
    return (text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") != 1
            or (first not in ("", ".") and Path(first).is_dir()))


def find_model_folders(models_dir: Path = MODELS_DIR) -> dict[str, Path]:
    """Complete model folders under models/, bundled default first."""
    if not Path(models_dir).is_dir():
        return {}
    found = sorted(p for p in Path(models_dir).iterdir() if (p / "config.json").is_file())
    found.sort(key=lambda p: p.resolve() != BUNDLED_MODEL.resolve())
    return {p.name: p for p in found}


def resolve_models(model=None, revision: str | None = None, models_dir: Path = MODELS_DIR,
                   precision: str = "float32") -> ModelStore:
    """`--model` (a local folder, a Hub repo id, a Reconstructor, or None for the bundled one)
    plus the folders under models/. A requested model that fails falls back to the bundled one,
    with a notice for the page; the default model is loaded here, so that failure shows at start.
    `precision` applies to every model the store loads ("auto" per model: int8 where a folder has an
    int8 file and the CPU the instructions)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    store = ModelStore(folders=dict(find_model_folders(models_dir)), precision=precision)
    from recon import ConfigError, ReconConfig
    for name, folder in list(store.folders.items()):  # a folder whose config is unusable is not offered
        try:
            store.configs[name] = ReconConfig.load(folder / "config.json")
        except ConfigError as e:
            del store.folders[name]
            store.skipped[name] = str(e)
            log.warning("model %s skipped: %s", name, e)
    fallbacks = list(store.folders)
    if isinstance(model, Reconstructor):
        store.folders = {"given model": None} | store.folders
        store.loaded["given model"] = model
        store.default = "given model"
        return store
    problem = None
    if model is not None and Path(model).is_dir():
        name = Path(model).resolve().name
        store.folders = {name: Path(model)} | {k: v for k, v in store.folders.items() if k != name}
        try:
            store.get(name)
            store.default = name
            return store
        except gr.Error as e:
            del store.folders[name]
            problem = f"Could not load {model}: {e}"
    elif model is not None and looks_like_path(model):
        problem = f"Could not load {model}: no model folder there"
    elif model is not None:
        try:
            from hub import from_pretrained  # lazy: Hub support is optional, and touches the network
            store.loaded[str(model)] = from_pretrained(str(model), revision=revision, precision=store.precision)
            store.folders = {str(model): None} | store.folders
            store.default = str(model)
            return store
        except Exception as e:  # any failure (offline, missing repo, broken files) falls back
            problem = f"Could not pull {model}{'@' + revision if revision else ''}: {e}"
    for name in fallbacks:  # the bundled model first (find_model_folders sorts it first)
        if name not in store.folders:  # the requested folder, under models/ too, failed above
            continue
        try:
            store.get(name)
            store.default = name
            break
        except gr.Error as e:
            problem = (problem.rstrip(". ") + ". " if problem else "") + f"Could not load {name}: {e}"
            del store.folders[name]
    if problem:  # the server log gets the reason; visitors get no server paths or command-line advice
        store.problem = problem.rstrip(". ") + "."
        log.warning("%s%s", store.problem, f" Using {store.default} instead." if store.default else "")
        asked = f"the model {model}" if model is not None else "the bundled models"
        store.notice = (f"Could not load {asked} (the server log says why). "
                        + (f"Using {store.default} instead." if store.default else "No model is available."))
    elif store.default is None:
        store.notice = f"No model found: expected a model folder at {shown_path(BUNDLED_MODEL)}."
        log.warning(store.notice)
    return store


def list_examples(folder: Path = EXAMPLES_DIR) -> list[str]:
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]


class UploadImage(gr.Image):
    """gr.Image whose upload goes to recon.load_image untouched. Plain gr.Image opens the file
    with PIL before the handler runs, so a corrupt upload failed inside Gradio with no message."""

    is_template = True  # same front-end component as gr.Image

    def preprocess(self, payload):
        if payload is None or payload.path is None:
            return super().preprocess(payload)
        return str(payload.path)


# -- the page: one builder per tab, wired to the handlers above ------------------------------------
ALWAYS_LAST = {"trigger_mode": "always_last"}  # a trigger during a run queues one re-run: the newest input wins


def build_demo(model=None, revision: str | None = None, models_dir: Path = MODELS_DIR,
               time_limit: int = 120, precision: str = "float32") -> gr.Blocks:
    """The page. `model`: a local folder, a Hub repo id, a Reconstructor, or None (bundled)."""
    store = resolve_models(model, revision, models_dir, precision)
    current = store.loaded.get(store.default) if store.default else None
    with gr.Blocks(title="recon: reconstruct images from VGG16 features", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# Reconstruct an image from VGG16 features\n"
                    "A frozen VGG16 turns the image into a feature map; a small decoder trained to invert "
                    "that layer turns it back. What survives shows what the layer keeps.")
        gr.Markdown(f"⚠ {store.notice}" if store.notice else "", visible=bool(store.notice), elem_id="notice")
        with gr.Row():
            picker = gr.Dropdown(store.choices(), value=store.default, label="Model", scale=1,
                                 visible=len(store.names) > 1, elem_id="model-picker")
            banner = gr.HTML(random_weights_banner(current), elem_id="random-banner")
        with gr.Tabs():
            upload, resolution = upload_tab(store, current, picker)
            webcam_tab(store, time_limit)
            channel_sliders = features_tab(store, current, picker, upload, resolution)
            ablation_sliders = ablation_tab(store, current, picker, upload, resolution)
            refine_tab(store, picker, upload)
            layers_tab(store, upload, resolution)
            with gr.Tab("Model", id="model"):
                info = gr.Markdown(model_info(current, store.default, store.folders[store.default])
                                   if current else store.notice, elem_id="model-info")

        @page_errors()
        def on_select_model(name):
            rec = store.get(name)
            c = rec.config.channels
            # the Features channel keeps its value: the Features refresh this switch also starts sets
            # it to the new layer's strongest channel, and a visitor's pick after the switch wins
            return (random_weights_banner(rec), model_info(rec, name, store.folders.get(name)),
                    gr.Slider(maximum=c - 1), gr.Slider(maximum=c, value=min(8, c)),
                    gr.Slider(maximum=c - 1, value=0))

        picker.change(on_select_model, [picker], [banner, info, *channel_sliders, *ablation_sliders],
                      api_name="select_model")
    return demo


def upload_tab(store: ModelStore, current: Reconstructor | None, picker):
    """Upload: input | reconstruction slider, error map, metrics, download. Re-runs on a new upload,
    resolution or model."""
    with gr.Tab("Upload", id="upload"):
        with gr.Row():
            with gr.Column(scale=1):
                upload = UploadImage(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                     label="Image", elem_id="upload-image", height=320)
                size = current.config.image_size if current else "?"
                resolution = gr.Radio(RESOLUTIONS, value="trained", label="Resolution", elem_id="resolution",
                                      info=f"trained size: {size} px square; model's scale: short side {size} px; "
                                           f"own size: up to {MAX_NATIVE_SIDE} px")
                run_button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
                examples = list_examples()
                if examples:
                    gr.Examples([[p] for p in examples], inputs=[upload],
                                label="Example photos (public domain / CC0, see examples/LICENSES.md)")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label="Input | reconstruction", format="png", elem_id="slider",
                                        max_height=480)
                status = gr.Markdown(elem_id="upload-status")
                with gr.Row():
                    heat = gr.Image(label=f"Error map (black 0, yellow ≥ {ERROR_MAP_MAX})", format="png",
                                    elem_id="error-map", height=240)
                    with gr.Column():
                        metrics = gr.JSON(label="Metrics (input vs reconstruction)", elem_id="metrics")
                        download = gr.File(label="Download the reconstruction (PNG)", elem_id="download")

    @page_errors(outputs=5, status=4)
    def on_reconstruct(path, res, name):
        """First says what is being reconstructed, so the status never describes another image."""
        if not path:  # the upload was cleared, or the resolution changed before any upload
            yield None, None, None, None, "Upload an image, or pick an example below it."
            return
        label = dict((v, k) for k, v in RESOLUTIONS).get(res, res)
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"Reconstructing {Path(path).name} ({label}) with {name}…"
        yield reconstruct_upload(store.get(name), path, res)

    reconstructing = gr.on([run_button.click, upload.change, resolution.change, picker.change], on_reconstruct,
                           [upload, resolution, picker], [slider, heat, metrics, download, status],
                           api_name="reconstruct", **ALWAYS_LAST)
    toast_failures(reconstructing, status)
    return upload, resolution


# The Webcam tab's page side. The browser grabs the center square of each camera frame at the model's
# trained size, sends it as a JPEG data URL to `live_frame` (a server function of the tab's gr.HTML: one
# POST, no queue, no file), shows the JPEG that comes back, and sends the next frame once the camera
# has a new one: LIVE_IN_FLIGHT frames in flight, so a frame never waits behind a backlog. It measures
# what it shows: frames shown a second and the time from grabbing a frame to showing its
# reconstruction (median over the last few seconds), and the time of each stage.
LIVE_HTML = """
<div class="live-webcam">
  <div class="live-row">
    <figure><video id="webcam-video" autoplay muted playsinline></video><figcaption>Camera</figcaption></figure>
    <figure id="webcam-output"><img alt="reconstruction"/><figcaption>Reconstruction</figcaption></figure>
  </div>
  <button id="webcam-start" class="lg primary">Start the camera</button>
  <div id="webcam-stats">Start the camera to see live reconstructions.</div>
  <div id="webcam-stages"></div>
</div>
"""
LIVE_CSS = """
.live-row { display: flex; gap: 12px; flex-wrap: wrap; }
.live-row figure { flex: 1 1 300px; margin: 0; }
.live-row video, .live-row img { width: 100%; max-width: 448px; aspect-ratio: 1; object-fit: cover;
  background: var(--block-background-fill); border-radius: 6px; }
.live-row video, .live-row img { transform: scaleX(-1); }  /* both as in a mirror; what is sent is not flipped */
.live-row img:not([src]) { visibility: hidden; }  /* no broken-image icon before the first frame */
#webcam-start { margin: 8px 0; padding: 6px 18px; border-radius: 6px; }
#webcam-stages { font-size: 0.9em; }
"""
LIVE_JS = """
const video = element.querySelector('#webcam-video'), shown = element.querySelector('#webcam-output img');
const button = element.querySelector('#webcam-start');
const statsLine = element.querySelector('#webcam-stats'), stagesLine = element.querySelector('#webcam-stages');
const canvas = document.createElement('canvas'), ctx = canvas.getContext('2d');
const WINDOW_MS = WINDOW_S * 1000;
let running = false, side = 224, frames = 0, sent = 0, shownSeq = 0, newFrame = true, history = [], lastSsim = -1e9, ssim = null;
const median = xs => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : 0; };
const modelName = () => document.querySelector('#model-picker input')?.value || null;
function watchFrames() {  // newFrame: the camera has a frame not sent yet
  if (!running) return;
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(() => { newFrame = true; watchFrames(); });
  else { newFrame = true; setTimeout(watchFrames, 15); }
}
async function nextFrame() {
  while (running && (!newFrame || video.readyState < 2)) await new Promise(r => setTimeout(r, 4));
  newFrame = false;
}
function report(t) {
  history = history.filter(h => t - h.shown <= WINDOW_MS);
  const fps = history.length > 1 ? (history.length - 1) / ((t - history[0].shown) / 1000) : 0;
  const last = history[history.length - 1];
  statsLine.textContent = `PSNR ${last.psnr.toFixed(2)} dB · SSIM ${ssim === null ? '…' : ssim.toFixed(3)} · ` +
    `${fps.toFixed(1)} fps shown · ${median(history.map(h => h.latency)).toFixed(0)} ms camera to screen · frame ${frames}`;
  const m = key => median(history.map(h => h[key])).toFixed(1);
  stagesLine.textContent = `Where a frame's time goes (ms, median of the last ${WINDOW_S} s): ` +
    `grab + JPEG in the browser ${m('grab')} · upload, wait and download ${m('transfer')} · server: ` +
    `decode ${m('decode')}, model ${m('model')}, metrics ${m('metrics')}, encode ${m('encode')} · ` +
    `decode + show in the browser ${m('show')}`;
}
async function worker(began) {  // IN_FLIGHT of these run at once, each one frame at a time
  while (running) {
    if (performance.now() - began > TIME_LIMIT_S * 1000) { stop(`Stopped after ${TIME_LIMIT_S} s; start again to continue.`); break; }
    await nextFrame();
    if (!running) break;
    const t0 = performance.now(), seq = ++sent;
    const w = video.videoWidth, h = video.videoHeight, s = Math.min(w, h);
    canvas.width = canvas.height = side;
    ctx.drawImage(video, (w - s) / 2, (h - s) / 2, s, s, 0, 0, side, side);
    const frame = canvas.toDataURL('image/jpeg', 0.9);
    const t1 = performance.now(), withSsim = t1 - lastSsim > 1000;
    if (withSsim) lastSsim = t1;
    let reply;
    try { reply = await server.live_frame({image: frame, model: modelName(), ssim: withSsim}); }
    catch (e) { reply = {error: e.message || String(e)}; }
    const t2 = performance.now();
    if (!running) break;
    if (!reply || reply.error) { stop(`⚠ ${reply ? reply.error : 'the server did not answer'}`); break; }
    if (seq < shownSeq) continue;  // a newer frame is on screen already
    shownSeq = seq;
    shown.src = reply.image;
    try { await shown.decode(); } catch (e) { /* shown at the next paint all the same */ }
    const t3 = performance.now();
    frames += 1; side = reply.size;
    if (reply.ssim !== null) ssim = reply.ssim;
    const server_ms = reply.ms.decode + reply.ms.model + reply.ms.metrics + reply.ms.encode;
    history.push({shown: t3, latency: t3 - t0, psnr: reply.psnr, grab: t1 - t0, transfer: t2 - t1 - server_ms,
                  show: t3 - t2, ...reply.ms});
    report(t3);
  }
}
function stop(message) {
  running = false;
  video.srcObject?.getTracks().forEach(track => track.stop());
  video.srcObject = null;
  button.textContent = 'Start the camera';
  if (message) statsLine.textContent = message;
}
button.addEventListener('click', async () => {
  if (running) { stop(); return; }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
    await video.play();
  } catch (e) { statsLine.textContent = `⚠ No camera: ${e.message || e}`; return; }
  running = true; frames = 0; sent = 0; shownSeq = 0; history = []; ssim = null; lastSsim = -1e9;
  button.textContent = 'Stop';
  statsLine.textContent = 'Waiting for the first reconstruction…';
  watchFrames();
  const began = performance.now();
  for (let i = 0; i < IN_FLIGHT; i++) worker(began);
});
"""


def webcam_tab(store: ModelStore, time_limit: int) -> None:
    """Webcam: the page's own capture loop (LIVE_JS) calling `live_frame` through a server function;
    the `webcam_frame` API keeps the handler for clients (gradio_client)."""
    with gr.Tab("Webcam", id="webcam"):
        gr.Markdown(f"Each camera frame is cropped to its center square, reconstructed at the model's trained size "
                    f"and shown; the next frame goes as soon as one is back. The line below the images says what "
                    f"this page gets: frames shown a second and the time from camera to screen. A stream stops "
                    f"after {time_limit} s; start it again to continue.")

        frame_slots = threading.BoundedSemaphore(1)  # one frame on the CPU at a time: two only split the cores

        def live_frame_request(request: dict) -> dict:
            """{"image": data URL, "model": name, "ssim": bool} -> `live_frame`'s reply, or {"error": why}."""
            try:
                if not isinstance(request, dict):
                    raise ValueError("a webcam request must be an object")
                model = store.get(request.get("model") or None)
                with frame_slots:
                    return live_frame(model, request.get("image"), bool(request.get("ssim")))
            except (gr.Error, *EXPECTED_ERRORS) as e:
                message = e.message if isinstance(e, gr.Error) else str(e)
                log.info("live_frame: %s", message)
                return {"error": message}
            except Exception as e:  # a bug: logged with its traceback, the page stops with its type
                log.exception("live_frame failed")
                return {"error": f"Something went wrong ({type(e).__name__}: {e})."}

        live_frame_request.__name__ = "live_frame"  # what the page's JavaScript calls: server.live_frame(...)
        js = (LIVE_JS.replace("WINDOW_S", f"{FPS_WINDOW_S:g}").replace("TIME_LIMIT_S", str(int(time_limit)))
              .replace("IN_FLIGHT", str(LIVE_IN_FLIGHT)))
        gr.HTML(LIVE_HTML, css_template=LIVE_CSS, js_on_load=js, server_functions=[live_frame_request],
                elem_id="webcam-live")

        @page_errors(outputs=3, status=1)
        def webcam_frame(frame: np.ndarray, stats: dict, name: str) -> tuple:
            """One frame through `reconstruct_frame`, for API clients: (reconstruction, status line, stats)."""
            return reconstruct_frame(store.get(name), frame, stats)

        gr.api(webcam_frame, api_name="webcam_frame")  # inside the tab: gr.Tabs takes only tabs


# The Features tab's channel, kept straight in the browser. A refresh (model switch, tab visit, N)
# keeps the visitor's last pick when it was made for this model and image (a pick right after a
# switch can reach the server before the switch's refresh does), else shows the strongest channel.
# The channel it keeps is the newest pick the server has run (a State): a refresh deferred by
# trigger_mode="always_last" reads the slider when it is sent, which can be before a pick queued
# ahead of it has set the slider.
# A pick writes its channel back to the slider only if a refresh was pending when it was made (that
# refresh runs first and sets the slider); otherwise the visitor may already have moved it on.
_IMAGE_KEY = "(up) => up ? (up.path || up.url || null) : null"
FEATURE_PICK_JS = f"""(up, res, n, ch, model, pending) => {{
    window.reconFeaturePick = {{model: model, image: ({_IMAGE_KEY})(up)}};
    return [up, res, n, ch, model, !!window.reconFeatureRefreshPending];
}}"""
FEATURE_TILE_JS = f"""(up, res, n, model) => {{
    window.reconFeaturePick = {{model: model, image: ({_IMAGE_KEY})(up)}};
    return [up, res, n, model];
}}"""
FEATURE_REFRESH_JS = f"""(up, res, n, model, ch, keep) => {{
    const pick = window.reconFeaturePick;
    window.reconFeatureRefreshPending = true;
    return [up, res, n, model, ch, !!pick && pick.model === model && pick.image === ({_IMAGE_KEY})(up)];
}}"""
FEATURE_REFRESH_DONE_JS = "() => { window.reconFeatureRefreshPending = false; }"


def features_tab(store: ModelStore, current: Reconstructor | None, picker, upload, resolution):
    """Features: the strongest channels as tiles, one large; returns the channel slider (the model
    picker resets its range)."""
    channels = current.config.channels if current else 256
    with gr.Tab("Features", id="features") as tab:
        gr.Markdown("The feature map of the image in the Upload tab: the channels with the highest mean "
                    "activation, each on its own colour range (black = 0). Click a tile, or pick a channel "
                    "(slider, arrow keys, or type it and press Enter), to see it large.")
        with gr.Row():
            top_n = gr.Slider(1, 64, value=16, step=1, label="Strongest N channels", elem_id="top-n")
            channel = gr.Slider(0, channels - 1, value=0, step=1, label="Channel to see large (starts at the strongest)",
                                elem_id="channel")
            button = gr.Button("Show features", variant="primary", elem_id="features-button")
        summary = gr.Markdown(elem_id="feature-summary")
        with gr.Row():
            gallery = gr.Gallery(label="Strongest channels", columns=4, height=520, elem_id="feature-grid",
                                 format="png", allow_preview=False)
            large = gr.Image(label="Channel", format="png", elem_id="channel-large", height=520)
        keep_pick = gr.Checkbox(False, visible=False)  # set in the browser (FEATURE_REFRESH_JS)
        last_pick = gr.State(None)  # {"model", "channel"}: the visitor's newest pick the server has run
        refresh_pending = gr.Checkbox(False, visible=False)  # set in the browser (FEATURE_PICK_JS)

    @page_errors(outputs=4, status=2)
    def on_features(path, res, n, name, ch, keep, picked):  # the visitor's channel, or the strongest
        if not path:
            return [], None, NO_UPLOAD, 0
        model = store.get(name)
        if keep and picked and picked["model"] == name:  # the slider may not show that pick yet (a deferred
            ch = picked["channel"]                        # refresh reads it when it is sent, not when it runs)
        keep = keep and ch is not None and 0 <= int(ch) < model.config.channels
        tiles, image, text, ch = feature_view(model, path, res, n, int(ch) if keep else None)
        return (highlighted(tiles, ch), image, text,
                gr.Slider(value=ch, maximum=model.config.channels - 1))

    @page_errors(outputs=5, status=1)
    def on_channel(path, res, n, ch, name, pending):  # the tile highlight follows the channel, or goes
        if not path:
            return None, NO_UPLOAD, gr.skip(), gr.skip(), gr.skip()
        tiles, image, text, ch = feature_view(store.get(name), path, res, n, ch)
        # the slider is the visitor's own, unless a refresh started before this pick set it back
        return image, text, highlighted(tiles, ch), ch if pending else gr.skip(), {"model": name, "channel": ch}

    @page_errors(outputs=5, status=2)
    def on_pick_tile(path, res, n, name, evt: gr.SelectData):
        ch = tile_channel(evt.value.get("caption") if isinstance(evt.value, dict) else None)
        tiles, image, text, ch = feature_view(store.get(name), path, res, n, ch)
        return ch, image, text, highlighted(tiles, ch), {"model": name, "channel": ch}

    # .input: any change by the visitor (drag, arrow keys, a typed number), never the handlers' own updates;
    # a model switch re-runs the view (the tiles of another layer's channels would mislead). The tab's
    # events share one queue slot, so they run in the order they were triggered.
    in_turn = {"concurrency_id": "features", "concurrency_limit": 1}
    showing = gr.on([button.click, tab.select, top_n.input, picker.change], on_features,
                    [upload, resolution, top_n, picker, channel, keep_pick, last_pick], [gallery, large, summary, channel],
                    api_name="features", js=FEATURE_REFRESH_JS, **in_turn, **ALWAYS_LAST)
    showing.then(None, js=FEATURE_REFRESH_DONE_JS, api_visibility="private", show_progress="hidden")
    picking = channel.input(on_channel, [upload, resolution, top_n, channel, picker, refresh_pending],
                            [large, summary, gallery, channel, last_pick], api_name="show_channel", js=FEATURE_PICK_JS,
                            show_progress="minimal", **in_turn, **ALWAYS_LAST)
    clicking = gallery.select(on_pick_tile, [upload, resolution, top_n, picker], [channel, large, summary, gallery, last_pick],
                              api_name="pick_channel", js=FEATURE_TILE_JS, **in_turn)
    for event in (showing, picking, clicking):
        toast_failures(event, summary)
    return [channel]


def ablation_tab(store: ModelStore, current: Reconstructor | None, picker, upload, resolution):
    """Ablation: reconstruct from altered features; returns the K and channel sliders (for the picker)."""
    channels = current.config.channels if current else 256
    with gr.Tab("Ablation", id="ablation"):
        gr.Markdown("Reconstruct the image in the Upload tab from altered features, next to the "
                    "reconstruction from the unaltered ones. The difference map shows what was lost.")
        with gr.Row():
            mode = gr.Radio(ABLATIONS, value="top_k", label="Alteration", elem_id="ablation-mode")
            k = gr.Slider(0, channels, value=min(8, channels), step=1, label="K (keep top K)")
            zero_ch = gr.Slider(0, channels - 1, value=0, step=1, label="Channel to zero")
            bits = gr.Slider(1, 8, value=2, step=1, label="Bits (quantize)")
        button = gr.Button("Reconstruct from altered features", variant="primary", elem_id="ablate-button")
        status = gr.Markdown(elem_id="ablation-status")
        with gr.Row():
            plain = gr.Image(label="From unaltered features", format="png", elem_id="ablation-plain")
            altered = gr.Image(label="From altered features", format="png", elem_id="ablation-altered")
            diff = gr.Image(label="What was lost |unaltered − altered|", format="png", elem_id="ablation-diff")
        metrics = gr.JSON(label="Metrics against the input", elem_id="ablation-metrics")

    @page_errors(outputs=5, status=4)
    def on_ablate(path, res, m, k_, ch, b, name):
        if not path:
            return None, None, None, None, NO_UPLOAD
        *images, result = ablate(store.get(name), path, res, m, k_, ch, b)
        return *images, result, f"{Path(path).name}, {name}: {result['ablation']}."

    ablating = gr.on([button.click, picker.change], on_ablate, [upload, resolution, mode, k, zero_ch, bits, picker],
                     [plain, altered, diff, metrics, status], api_name="ablate", **ALWAYS_LAST)
    toast_failures(ablating, status)
    return [k, zero_ch]


class StopRequests:
    """Stop buttons per browser session: `listen` hands a running job an Event that `request` sets."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def listen(self, session: str):
        event = threading.Event()
        with self._lock:
            self._events[session] = event
        try:
            yield event
        finally:
            with self._lock:
                if self._events.get(session) is event:
                    del self._events[session]

    def request(self, session: str) -> None:
        with self._lock:
            event = self._events.get(session)
        if event is not None:
            event.set()


REFINE_STOPS = StopRequests()


def refine_tab(store: ModelStore, picker, upload) -> None:
    with gr.Tab("Refine", id="refine"):
        gr.Markdown("Someone who holds the encoder as well as the features can do better than the "
                    "decoder's one guess: change the pixels until encoding them gives back the same "
                    "features. Watch whether the image gets closer to the original (PSNR up) or the "
                    "features match ever closer while the image does not (the layer has let go of "
                    "what is missing). Uses the image in the Upload tab, at the trained size.")
        with gr.Row():
            steps = gr.Slider(10, MAX_REFINE_STEPS, value=100, step=10, label="Steps", elem_id="refine-steps")
            button = gr.Button("Refine by feature matching", variant="primary", elem_id="refine-button")
            stop = gr.Button("Stop", variant="stop", elem_id="refine-stop")
        status = gr.Markdown(elem_id="refine-status")
        with gr.Row():
            guess = gr.Image(label="Decoder's guess", format="png", elem_id="refine-guess")
            refined = gr.Image(label="Refined", format="png", elem_id="refine-output")
            change = gr.Image(label=f"What refining changed (black 0, yellow ≥ {ERROR_MAP_MAX})", format="png",
                              elem_id="refine-change")
        metrics = gr.JSON(label="Metrics against the input", elem_id="refine-metrics")

    @page_errors(outputs=5, status=3)
    def on_refine(path, n, name, request: gr.Request):
        if not path:
            yield None, None, None, NO_UPLOAD, None
            return
        with REFINE_STOPS.listen(request.session_hash) as stop:
            yield from refine_upload(store.get(name), path, n, stop=stop)

    def on_stop(request: gr.Request):
        REFINE_STOPS.request(request.session_hash)

    refining = button.click(on_refine, [upload, steps, picker], [guess, refined, change, status, metrics],
                            api_name="refine", concurrency_limit=1)
    toast_failures(refining, status)
    # Stop asks the running refinement to end at its next frame, which then says where it stopped
    # (cancelling the event instead left the last "Step n / N" standing, or raced a status written here)
    stop.click(on_stop, api_visibility="private", queue=False)


ALL_NETWORKS = "every network"


def layers_tab(store: ModelStore, upload, resolution) -> None:
    """Layers: the Upload tab's photo from every bundled layer side by side: how much each keeps; a
    network to show alone; and the same stride from different networks."""
    networks = store.networks()
    with gr.Tab("Layers", id="layers") as tab:
        gr.Markdown("The image in the Upload tab, reconstructed from each bundled layer, shallow to deep, "
                    "at the Upload tab's resolution. Deeper layers have fewer positions (larger stride) and "
                    "more abstract channels: watch colour, texture and then shape go.")
        with gr.Row():
            network = gr.Radio([(ALL_NETWORKS, ALL_NETWORKS)] + [(NETWORK_NAMES.get(b, b), b) for b in networks],
                               value=ALL_NETWORKS, label="Network", visible=len(networks) > 1,
                               elem_id="layers-network", scale=3)
            button = gr.Button("Compare layers", variant="primary", elem_id="layers-button", scale=1)
        status = gr.Markdown(elem_id="layers-status")
        gallery = gr.Gallery(label="Input, then each layer's reconstruction", columns=6, height="auto",
                             elem_id="layers-grid", format="png", allow_preview=True, object_fit="contain")
        table = gr.Markdown(elem_id="layers-table")
        with gr.Row():
            plot = gr.Plot(label="Quality against depth", elem_id="layers-plot", format="png", scale=3)
            gr.Markdown("PSNR and SSIM: higher is closer to the input; LPIPS (AlexNet, learned perceptual "
                        "distance): lower is closer. Values are for this photo at this resolution; held-out "
                        "averages per layer are in each model's Model tab.", scale=1)
        with gr.Column(visible=len(networks) > 1):
            gr.Markdown("### Same stride, different network\nAt each stride that two networks share, this photo "
                        "from each network's deepest bundled layer there: which network keeps more of it.")
            across = gr.Gallery(label="Each shared stride, one network after another", columns=4, height="auto",
                                elem_id="networks-grid", format="png", allow_preview=True, object_fit="contain")
            across_table = gr.Markdown(elem_id="networks-table")

    @page_errors(outputs=4, status=3)
    def on_compare(path, res, chosen=ALL_NETWORKS):
        if not path:
            return [], None, "", NO_UPLOAD
        models = store.one_per_layer(None if chosen in (None, ALL_NETWORKS) else chosen)
        skipped = f" Not shown: {', '.join(sorted(store.skipped))} (could not be loaded)." if store.skipped else ""
        if not models:
            return [], None, "", f"No model could be loaded to compare.{skipped}"
        tiles, figure, text = compare_layers(models, path, res)
        return tiles, figure, text, f"{Path(path).name}, {len(tiles) - 1} layers.{skipped}"

    @page_errors(outputs=2, status=1)  # a failure shows in its table; the layers' event toasts the upload's own
    def on_compare_networks(path, res):
        if not path or len(networks) < 2:
            return [], ""
        return compare_networks(store.one_per_layer(), path, res)

    comparing = gr.on([button.click, tab.select, network.change], on_compare, [upload, resolution, network],
                      [gallery, plot, table, status], api_name="layers", **ALWAYS_LAST)
    toast_failures(comparing, status)
    gr.on([button.click, tab.select], on_compare_networks, [upload, resolution], [across, across_table],
          api_name="networks", **ALWAYS_LAST)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log.setLevel(logging.INFO)  # our one-line notes on visitors' errors; other libraries stay at WARNING
    demo = build_demo(args.model, args.revision, precision=args.precision)
    demo.queue(max_size=32).launch(server_name=args.host, server_port=args.port, share=args.share,
                                   max_file_size=MAX_FILE_BYTES, footer_links=["api"])


if __name__ == "__main__":
    main()
