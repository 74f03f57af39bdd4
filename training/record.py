"""Write a model folder's training.json (recon.training_record) from its history.json.

    python -m training.record models/vgg16-block4_conv3
    python -m training.record models/vgg16-block3_conv3 --crops-before 450864 \\
        --held-out-curve benchmarks/results/warm_start_curve/warm_start_curve.json

`training.fit` writes the record after every epoch; this command writes it for a folder trained
before that, or for the end of a warm-start chain whose earlier runs' crops (--crops-before) and
held-out curve are known (benchmarks/snapshot_curve.py's curve.json: the PSNR its last doubling of
crops added; or benchmarks/warm_start_curve.py's JSON: its fitted gain per doubling).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recon.training_record import TrainingRecord, from_curve


def epoch_crops(record: dict, batch_size: int) -> int:
    """The crops a run had trained on at the end of a history.json epoch: its `crops`; older histories
    have only steps, counted as full batches."""
    return int(record["crops"]) if "crops" in record else int(record["step"]) * int(batch_size)


def record_from_history(history: list[dict], batch_size: int, crops_before: int = 0) -> TrainingRecord:
    """The kept (best validation PSNR) epoch's crops, counted from the start of its warm-start chain
    (`crops_before` crops ahead of this run), and the validation PSNR its last doubling added."""
    points = [(crops_before + epoch_crops(r, batch_size), float(r["val_psnr"])) for r in history]
    kept = max(range(len(points)), key=lambda i: points[i][1])
    return from_curve(points, points[kept][0], "validation")


def main(argv=None) -> TrainingRecord:
    p = argparse.ArgumentParser(prog="python -m training.record", description=__doc__.split("\n")[0])
    p.add_argument("folder", help="model folder with history.json and run_config.json")
    p.add_argument("--crops-before", type=int, default=0, help="crops of the warm-start chain before this run")
    p.add_argument("--held-out-curve", help="take the gain from a held-out curve instead: benchmarks/"
                                            "snapshot_curve.py's curve.json (its last doubling) or "
                                            "warm_start_curve.py's JSON (its per-doubling fit)")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    try:
        history = json.loads((folder / "history.json").read_text())
        batch = int(json.loads((folder / "run_config.json").read_text())["batch_size"])
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{folder}: needs history.json and run_config.json ({e})") from None
    record = record_from_history(history, batch, args.crops_before)
    if args.held_out_curve:
        curve = json.loads(Path(args.held_out_curve).read_text())
        gain = curve["gain_last_doubling_db"] if "gain_last_doubling_db" in curve else curve["per_doubling"]["psnr"]
        record = TrainingRecord(record.crops_seen, None if gain is None else round(float(gain), 4), "held-out")
    print(f"{record.save(folder)}: {record.summary()}")
    return record


if __name__ == "__main__":
    main()
