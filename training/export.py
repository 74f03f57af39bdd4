"""Export a training run as a lean model folder: what loading, the card and the app need, nothing else.

    python -m training.export runs/a models/my-model [--float16] [--holdout PHOTOS]

Keeps config.json, the decoder, the encoder where the folder holds one (re-saved as float16 with
--float16, which halves it; check the held-out PSNR with `training.evaluate` afterwards), history.json, loss_curve.png,
run_config.json, split.json and the last sample grid; leaves out backups and per-epoch grids.
With --holdout it also scores the model there (`training.evaluate`: metrics_summary.json, histograms,
samples.png of held-out reconstructions) and writes the model card, as the bundled models have them.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from recon.startup import require_folders, start_tensorflow_quietly

RECORDS = ("history.json", "loss_curve.png", "run_config.json", "split.json")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("run", help="a training.fit run folder")
    p.add_argument("out", help="the model folder to write")
    p.add_argument("--float16", action="store_true", help="store the encoder weights as float16")
    p.add_argument("--holdout", help="held-out photos to score the model on; also writes the model card")
    args = p.parse_args(argv)
    require_folders(p, {"run": args.run, "--holdout": args.holdout})
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        p.error(f"{args.out}: a file, not a folder")
    if out.exists() and any(out.iterdir()):
        p.error(f"{args.out} is not empty: export into a new folder")
    return args


if __name__ == "__main__":
    parse_args()  # --help and bad arguments answer now, before TensorFlow loads (seconds)
    start_tensorflow_quietly()

from hub.card import write_model_card  # noqa: E402
from recon.pipeline import ModelFolderError, Reconstructor  # noqa: E402
from training import evaluate  # noqa: E402


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
    args = parse_args(argv)
    out = Path(args.out)
    try:
        model = export(Path(args.run), out, args.float16)
    except ModelFolderError as e:
        raise SystemExit(f"run: {e}") from None
    print(f"exported {model.describe()} to {out}")
    if args.holdout:
        try:
            evaluate.main(["--model", str(out), "--data", args.holdout, "--save-dir", str(out)])
        except SystemExit:  # nothing scorable: take the export back, so that a rerun finds OUT empty
            shutil.rmtree(out)
            print(f"removed {out}: it was not scored")
            raise
        (out / "sample_reconstructions.png").replace(out / "samples.png")  # the name the card and the Hub use
        (out / "training_loss_curve.png").unlink(missing_ok=True)  # the same plot as loss_curve.png
        write_model_card(out, model=model)


if __name__ == "__main__":
    main()
