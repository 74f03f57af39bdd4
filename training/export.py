"""Export a training run as a lean model folder: what loading, the card and the app need, nothing else.

    python -m training.export runs/a models/my-model [--float16]

Keeps config.json, the decoder, the encoder (re-saved as float16 with --float16, which halves it;
check the held-out PSNR with `training.evaluate` afterwards), history.json, loss_curve.png,
run_config.json, split.json and the last sample grid; leaves out backups and per-epoch grids.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from recon.pipeline import Reconstructor

RECORDS = ("history.json", "loss_curve.png", "run_config.json", "split.json")


def export(run: Path, out: Path, float16: bool = False) -> Reconstructor:
    model = Reconstructor.from_pretrained(run)
    model.save_pretrained(out, encoder_dtype="float16" if float16 else "float32")
    for name in RECORDS:
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    grids = sorted((run / "samples").glob("epoch_*.png"))
    if grids:
        shutil.copyfile(grids[-1], out / "training_samples.png")
    return model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a training.fit run folder")
    p.add_argument("out", help="the model folder to write")
    p.add_argument("--float16", action="store_true", help="store the encoder weights as float16")
    args = p.parse_args(argv)
    model = export(Path(args.run), Path(args.out), args.float16)
    print(f"exported {model.describe()} to {args.out}")


if __name__ == "__main__":
    main()
