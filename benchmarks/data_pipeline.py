"""The input pipeline at CelebA-HQ scale: peak memory of streaming at 2,000 vs 20,000 photos, training
speed of streaming vs the feature cache vs decoding every photo up front, and float32 vs the precision
`auto` picks, with the held-out PSNR each reaches in the same steps.

    python benchmarks/data_pipeline.py                 # about 20 minutes on 2 CPU cores
    python benchmarks/data_pipeline.py --quick         # a smoke test of every configuration

N synthetic 1024x1024 JPEGs (smooth random colour fields plus grain, about 170 KB each) are generated
once into --images and reused by later runs. Each configuration is one short epoch of
`python -m training.fit` (stopped after --steps steps), in a fresh process, so that its peak RSS
(VmHWM) is its own. Images/s is the steady state: the steps after the first --warmup. The in-memory
path would need about 3 MB of RAM per photo (60 GB at 20,000), so the speed comparison runs all three
paths at --small photos. Prints a markdown table; writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GRAIN_TILES = 8  # random grain tiles, rotated and blended in, so no two photos share their pixels


def synthetic_photo(index: int, size: int):
    """A photo-like JPEG subject: a smooth random colour field (a bicubic blow-up of 6x6 random colours)
    with 5% of coarse random grain, from a seed, so the folder is the same on every machine."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(index)
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    tile_rng = np.random.default_rng([1, int(rng.integers(GRAIN_TILES))])
    tile = tile_rng.integers(0, 256, (size // 2, size // 2, 3), dtype=np.uint8)
    grain = Image.fromarray(tile).resize((size, size), Image.NEAREST).rotate(90 * int(rng.integers(4)))
    return Image.blend(field, grain, 0.05)


def write_photo(job: tuple[str, int, int]) -> None:
    path, index, size = job
    partial = f"{path}.partial.jpg"
    synthetic_photo(index, size).save(partial, quality=90)
    os.replace(partial, path)  # an interrupted run leaves no half-written photo to be reused


def ensure_photos(folder: Path, start: int, count: int, size: int, processes: int) -> None:
    """Photos start..start+count-1 in `folder`, generated where missing, in parallel processes (forked:
    1 where TensorFlow is loaded already, as in a test)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"{i:06d}.jpg"), i, size) for i in range(start, start + count)
            if not (folder / f"{i:06d}.jpg").exists()]
    if jobs:
        t = time.time()
        print(f"generating {len(jobs)} {size}x{size} JPEGs in {folder} ...", flush=True)
        if processes == 1:
            list(map(write_photo, jobs))
        else:
            with ProcessPoolExecutor(processes) as pool:
                list(pool.map(write_photo, jobs, chunksize=64))
        print(f"  {time.time() - t:.0f} s", flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: ru_maxrss (KB on most systems)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_config(config: dict) -> dict:
    """One short epoch of training.fit as `config` says; what it measured."""
    import keras

    from training import fit

    started = time.time()
    marks = {}

    class Meter(keras.callbacks.Callback):
        """Times the steps after the warm-up, and ends training after config["steps"] steps."""

        def __init__(self):
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == 1:
                marks["first_step"] = time.time()
            if self.steps == config["warmup"]:
                marks["warm"] = time.time()
            if self.steps == config["steps"]:
                marks["end"] = time.time()
                self.model.stop_training = True

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--data", config["train"], "--val-data", config["val"], "--out", f"{tmp}/run",
                "--cache-dir", f"{tmp}/cache", "--cache-max-gb", "1000", "--limit", str(config["n"]),
                "--epochs", "1", "--verbose", "0", *config["fit_args"],
                *{"stream": ["--no-cache"], "in-memory": ["--in-memory"], "cache": []}[config["mode"]]]
        fit.main(argv, callbacks=[Meter()])
        history = json.loads(Path(f"{tmp}/run/history.json").read_text())[-1]
        policy = json.loads(Path(f"{tmp}/run/run_config.json").read_text())["precision"]
    if "end" not in marks:
        raise SystemExit(f"{config['name']}: the epoch ended before {config['steps']} steps; use more photos")
    speed = (config["steps"] - config["warmup"]) * config["batch"] / (marks["end"] - marks["warm"])
    return {"peak_rss_mb": round(peak_rss_mb()), "images_per_s": round(speed, 1),
            "startup_s": round(marks["first_step"] - started, 1), "steps": history["step"],
            "val_psnr": round(history["val_psnr"], 3), "precision": policy}


def run_in_child(config: dict) -> dict:
    """`run_config` in a fresh Python process, so that its peak memory is its own."""
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True,
                          text=True, cwd=ROOT, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not results:
        raise RuntimeError(f"{config['name']} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(results[-1][len("RESULT "):])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default=str(Path(tempfile.gettempdir()) / "recon-data-pipeline"),
                   help="folder for the synthetic photos (train/ and val/), reused across runs")
    p.add_argument("--counts", default="2000,20000", help="training photos for the streaming memory comparison")
    p.add_argument("--small", type=int, default=300, help="training photos for the side-by-side speed comparison")
    p.add_argument("--val", type=int, default=32, help="held-out photos")
    p.add_argument("--size", type=int, default=1024, help="side of the generated photos")
    p.add_argument("--steps", type=int, default=50, help="steps per configuration")
    p.add_argument("--warmup", type=int, default=10, help="steps not timed (compilation, queues filling)")
    p.add_argument("--precision-steps", type=int, default=150,
                   help="steps of the float32 vs auto comparison (one whole epoch: --small x crops-per-image "
                        "/ batch must equal it)")
    p.add_argument("--layer", default="block2_conv2")
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=128, help="held-out photos are scored at this size")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crops-per-image", type=int, default=4)
    p.add_argument("--fit-args", default="", help="more training.fit flags for every configuration")
    p.add_argument("--quick", action="store_true", help="tiny photos and models, a few steps: a smoke test")
    p.add_argument("--in-process", action="store_true", help="run configurations here (peak memory then shared)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data_pipeline.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.counts, args.small, args.val, args.size, args.steps, args.warmup = "8,12", 6, 2, 96, 3, 1
        args.precision_steps, args.crop_size, args.image_size, args.batch_size = 3, 32, 32, 4
        args.crops_per_image, args.in_process = 2, True
        args.fit_args = ("--encoder-weights random --decoder-width 8 --res-blocks 1 " + args.fit_args).strip()
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_config(json.loads(args.child))), flush=True)
        return {}
    counts = [int(c) for c in args.counts.split(",")]
    images = Path(args.images)
    processes = 1 if args.in_process else os.cpu_count()
    ensure_photos(images / "train", 0, max(counts + [args.small]), args.size, processes)
    ensure_photos(images / "val", 10**6, args.val, args.size, processes)  # other seeds: held out

    common = {"train": str(images / "train"), "val": str(images / "val"), "batch": args.batch_size,
              "steps": args.steps, "warmup": args.warmup}
    flags = ["--layer", args.layer, "--crop-size", str(args.crop_size), "--image-size", str(args.image_size),
             "--batch-size", str(args.batch_size), *args.fit_args.split()]
    per_image, float32 = ["--crops-per-image", str(args.crops_per_image)], ["--precision", "float32"]
    # the precision runs train (about) one whole epoch, so the learning-rate schedule runs its course
    precision_per_image = -(-args.precision_steps * args.batch_size // args.small)
    configs = [
        *({"name": f"streaming, N={n}", "mode": "stream", "n": n, "fit_args": flags + per_image + float32}
          for n in counts),
        *({"name": f"{label}, N={args.small}", "mode": mode, "n": args.small,
           "fit_args": flags + per_image + float32}
          for label, mode in [("streaming", "stream"), ("feature cache", "cache"),
                              ("in memory (before)", "in-memory")]),
        *({"name": f"{precision}, streaming, N={args.small}", "mode": "stream", "n": args.small,
           "fit_args": flags + ["--crops-per-image", str(precision_per_image), "--precision", precision],
           "steps": args.precision_steps, "warmup": min(args.warmup, args.precision_steps - 1)}
          for precision in ("float32", "auto")),
    ]
    results, started = {}, time.time()
    for config in configs:
        config = common | config
        load = os.getloadavg()[0]
        print(f"{config['name']} ...", flush=True)
        result = run_config(config) if args.in_process else run_in_child(config)
        results[config["name"]] = result | {"load_before": round(load, 2), "config": config}
        print(f"  {json.dumps({k: v for k, v in result.items()})}", flush=True)

    streaming = [results[f"streaming, N={n}"]["peak_rss_mb"] for n in counts]
    f32, auto = results[f"float32, streaming, N={args.small}"], results[f"auto, streaming, N={args.small}"]
    record = {
        "command": " ".join(["python benchmarks/data_pipeline.py", *(argv if argv is not None else sys.argv[1:])]),
        "results": results, "minutes": round((time.time() - started) / 60, 1), "cpus": os.cpu_count(),
        "rss_growth": round(streaming[-1] / streaming[0] - 1, 3),
        "precision_speedup": round(auto["images_per_s"] / f32["images_per_s"], 2),
        "precision_psnr_gap_db": round(auto["val_psnr"] - f32["val_psnr"], 3),
        "in_process": args.in_process,
    }
    print(table(results))
    print(f"streaming peak RSS, N={counts[-1]} vs N={counts[0]}: {record['rss_growth']:+.1%}; "
          f"{auto['precision']} vs float32: {record['precision_speedup']}x images/s, "
          f"held-out PSNR {record['precision_psnr_gap_db']:+.2f} dB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return record


def table(results: dict) -> str:
    rows = ["| configuration | peak RSS (MB) | images/s | start-up (s) | held-out PSNR (dB) | load avg |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rows.append(f"| {name} ({r['precision']}, {r['steps']} steps) | {r['peak_rss_mb']} | {r['images_per_s']} | "
                    f"{r['startup_s']} | {r['val_psnr']:.2f} | {r['load_before']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
