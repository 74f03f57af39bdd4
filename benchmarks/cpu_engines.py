"""Our CPU inference against OpenVINO's on the same model: images/s at batch 1 and held-out quality.

    python benchmarks/cpu_engines.py --data ../shared/photos/train --holdout ../shared/photos/holdout \
        [--model models/vgg16-block3_conv3] [--rounds 5] [--calls 30] [--threads 2]

Engines, all on (1, 224, 224, 3) float32 inputs, outputs and feature maps back as numpy arrays:
- ours float32, and ours int8 (the folder's TFLite file for the encoder and residual trunk, bfloat16
  upsampling: what "auto" runs), both through `Reconstructor.reconstruct_batch`;
- OpenVINO float32 and bfloat16 (converted from the same Keras models, `recon.openvino_engine`);
- OpenVINO int8 (NNCF; bfloat16 for what stays floating point) on the whole model, and on all but the
  decoder's upsampling stages and RGB layer, both calibrated on --images photos of --data (the seeded
  sample `training.quantize` takes);
- the latter calibrated on the example photos that ship with the package: what `precision="openvino"`
  runs, through `Reconstructor.reconstruct_batch`.
Each round times --calls calls of each engine, the engines in a rotated order each round, so that a
slow spell of a shared machine falls on all of them; images/s is reported as the best and the median
round, and per CPU-second of this process (with --threads 1 under `taskset -c N`, what a core to itself
would give: the measure that holds on a machine shared with other work). Held-out PSNR and SSIM at
224 (mean over --holdout) are given as the change against ours float32. Writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/vgg16-block3_conv3")
    p.add_argument("--data", required=True, help="training photos: the int8 calibration sample comes from them")
    p.add_argument("--holdout", required=True, help="held-out photos for the quality change")
    p.add_argument("--images", type=int, default=32, help="calibration photos")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=30, help="timed calls per engine per round")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for every engine (default: the cores this process may use)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_engines.json")
    return p.parse_args(argv)


def set_threads(threads: int) -> None:
    """The same thread count for TensorFlow (set before it starts), LiteRT and OpenVINO: LiteRT and
    OpenVINO take the cores this process may use, so a --threads below them narrows the affinity."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    cores = sorted(os.sched_getaffinity(0))
    if threads < len(cores):
        os.sched_setaffinity(0, cores[-threads:])


def engines(args, folder: Path) -> dict:
    """name -> (run(batch) -> (outputs, features)), built once each."""
    from recon import Reconstructor, load_image
    from recon.openvino_engine import OpenVinoEngine, convert, float_tail_of, quantize
    from training.quantize import calibration_sample, images_in

    ours_f32 = Reconstructor.from_pretrained(folder, precision="float32")
    ours_int8 = Reconstructor.from_pretrained(folder, precision="int8")
    ours_openvino = Reconstructor.from_pretrained(folder, precision="openvino")
    float_model = convert(ours_f32.encoder, ours_f32._fast_decoder)
    calibration = [ours_f32.prepare(load_image(p))[None]
                   for p in calibration_sample(images_in(args.data, "--data"), args.images)]
    tail = float_tail_of(ours_f32._fast_decoder)
    photos = f"{len(calibration)} training photos"
    return {
        "ours float32": ours_f32.reconstruct_batch,
        "ours int8 (TFLite file + bfloat16): auto": ours_int8.reconstruct_batch,
        "OpenVINO float32": OpenVinoEngine(float_model, "f32"),
        "OpenVINO bfloat16": OpenVinoEngine(float_model, "bf16"),
        f"OpenVINO int8 whole model (NNCF, {photos}) + bfloat16": OpenVinoEngine(quantize(float_model, calibration), "bf16"),
        f"OpenVINO int8 but upsampling and RGB (NNCF, {photos}) + bfloat16":
            OpenVinoEngine(quantize(float_model, calibration, tail), "bf16"),
        'ours precision="openvino": OpenVINO int8 but upsampling and RGB (NNCF, example photos) + bfloat16':
            ours_openvino.reconstruct_batch,
    }, ours_f32


def held_out(run, images) -> dict[str, float]:
    import numpy as np

    from recon.metrics import psnr, ssim
    outputs = [run(x)[0][0] for x in images]
    return {"psnr": float(np.mean([psnr(x[0], y) for x, y in zip(images, outputs)])),
            "ssim": float(np.mean([ssim(x[0], y) for x, y in zip(images, outputs)]))}


def timed_rounds(runs: dict, batch, rounds: int, calls: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """images/s of each engine in each round, the order rotated every round: by the clock, and per
    CPU-second of this process (with one thread, what a core to itself would give: other processes
    on a shared machine slow the first, hardly the second)."""
    names = list(runs)
    for name in names:  # warm-up: tracing, compilation, memory
        for _ in range(3):
            runs[name](batch)
    speeds, per_cpu_second = {name: [] for name in names}, {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                runs[name](batch)
            speeds[name].append(calls / (time.perf_counter() - start))
            per_cpu_second[name].append(calls / (time.process_time() - cpu))
    return speeds, per_cpu_second


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    set_threads(threads)
    from recon.startup import start_tensorflow_quietly
    start_tensorflow_quietly()
    from recon import load_image
    from recon.openvino_engine import versions
    from recon.precision import cpu_flags, resolve_precision
    from training.quantize import images_in

    folder = ROOT / args.model if not Path(args.model).is_absolute() else Path(args.model)
    runs, reference = engines(args, folder)
    holdout = [reference.prepare(load_image(p))[None] for p in images_in(args.holdout, "--holdout")]
    quality = {name: held_out(run, holdout) for name, run in runs.items()}
    base = quality["ours float32"]
    speeds, per_cpu_second = timed_rounds(runs, holdout[0], args.rounds, args.calls)
    flags = cpu_flags()
    record = {
        "model": args.model, "size": int(holdout[0].shape[1]), "batch": 1, "threads": threads,
        "cores": sorted(os.sched_getaffinity(0)), "rounds": args.rounds, "calls_per_round": args.calls,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpu": sorted(f for f in flags if f in {"avx512_bf16", "avx512_vnni", "amx_int8", "amx_bf16", "avx_vnni"}),
        "auto_resolves_to": resolve_precision("auto", int8_ready=True),  # here: "int8", the TFLite file
        **versions(), "held_out_photos": len(holdout),
        "engines": {name: {"images_per_s_best": round(max(s), 2), "images_per_s_median": round(statistics.median(s), 2),
                           "images_per_s_rounds": [round(v, 2) for v in s],
                           "images_per_cpu_s_median": round(statistics.median(per_cpu_second[name]), 2),
                           "psnr": round(quality[name]["psnr"], 4), "ssim": round(quality[name]["ssim"], 5),
                           "psnr_change": round(quality[name]["psnr"] - base["psnr"], 4),
                           "ssim_change": round(quality[name]["ssim"] - base["ssim"], 5)}
                    for name, s in speeds.items()},
    }
    width = max(map(len, speeds))
    print(f"{args.model} at {record['size']}, batch 1, {threads} threads on cores {record['cores']}, "
          f"best / median of {args.rounds} rounds of {args.calls} calls, load average {record['load_average_at_end']}:")
    for name, row in record["engines"].items():
        print(f"  {name:<{width}}  {row['images_per_s_best']:6.2f} / {row['images_per_s_median']:6.2f} images/s, "
              f"{row['images_per_cpu_s_median']:6.2f} per CPU-s   PSNR {row['psnr_change']:+.3f} dB  SSIM {row['ssim_change']:+.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    return record


if __name__ == "__main__":
    main()
