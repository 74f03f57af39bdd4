"""How much training stands behind a model, and whether its quality had stopped rising.

A model folder's `training.json` says how many training crops the kept weights have seen, across
every warm start that led to them, and how much the PSNR rose over the last doubling of those crops
(read off a curve on images never trained on). Under PLATEAU_DB the curve counts as flat: more of the
same training would add little, so the model's artefacts say something about its layer. Above it,
the model is still improving, and the demo says so beside its output.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

TRAINING_FILE = "training.json"
PLATEAU_DB = 0.2  # PSNR gained over the last doubling of crops below which a curve counts as flat
CURVES = ("validation", "held-out")
MAX_CROPS = 10 ** 12


@dataclass(frozen=True)
class TrainingRecord:
    crops_seen: int  # training crops behind the kept weights, every run of a warm-start chain counted
    gain_last_doubling_db: float | None  # PSNR gained from crops_seen / 2 to crops_seen; None: not measured
    curve: str = "validation"  # what the gain is read off: "validation" (split off the training folder) or "held-out"

    def __post_init__(self):
        if isinstance(self.crops_seen, bool) or not isinstance(self.crops_seen, int) \
                or not 0 <= self.crops_seen <= MAX_CROPS:
            raise ValueError(f"crops_seen must be an integer from 0 to {MAX_CROPS}, not {self.crops_seen!r}")
        gain = self.gain_last_doubling_db
        if gain is not None and (isinstance(gain, bool) or not isinstance(gain, (int, float))
                                 or not math.isfinite(gain) or abs(gain) > 100):
            raise ValueError(f"gain_last_doubling_db must be a finite number of dB or null, not {gain!r}")
        if self.curve not in CURVES:
            raise ValueError(f"curve must be one of {CURVES}, not {self.curve!r}")

    @property
    def plateaued(self) -> bool | None:
        """True where the last doubling of crops added under PLATEAU_DB; None where not measured."""
        return None if self.gain_last_doubling_db is None else self.gain_last_doubling_db < PLATEAU_DB

    def summary(self) -> str:
        """One line for people, e.g. "trained on 621k crops; still improving: +0.29 dB validation PSNR
        over the last doubling of crops"."""
        seen = f"trained on {short_count(self.crops_seen)} crops"
        if self.plateaued is None:
            return f"{seen}; whether its quality had stopped rising was not measured"
        gain = f"{self.gain_last_doubling_db:+.2f} dB {self.curve} PSNR over the last doubling of crops"
        return f"{seen}; {'plateaued' if self.plateaued else 'still improving'}: {gain}"

    def save(self, folder: str | Path) -> Path:
        """Write `training.json` aside and rename it into place (a kill leaves the old one whole)."""
        path = Path(folder) / TRAINING_FILE
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps(asdict(self) | {"plateaued": self.plateaued}, indent=1) + "\n")
        os.replace(part, path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "TrainingRecord | None":
        """The folder's record; None, with a warning naming the problem, if it is absent or not a valid
        record (it only informs people: a bad one never stops the model from loading)."""
        path = Path(folder) / TRAINING_FILE
        if not path.is_file():
            return None
        try:
            if path.stat().st_size > 64_000:
                raise ValueError("over 64 kB")
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls(data.get("crops_seen"), data.get("gain_last_doubling_db"), data.get("curve", "validation"))
        except (OSError, ValueError, TypeError, RecursionError) as e:
            warnings.warn(f"{path}: ignored, not a training record ({e})", stacklevel=2)
            return None


def short_count(n: int) -> str:
    """621234 -> "621k", 1_230_000 -> "1.23M", 950 -> "950"."""
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,}"


def from_curve(points: list[tuple[int, float]], crops_seen: int, curve: str = "validation") -> TrainingRecord:
    """The record of weights kept after `crops_seen` crops, from (crops, PSNR) points of a curve on
    unseen images: the gain is the best PSNR up to crops_seen minus the best up to crops_seen / 2;
    not measured (None) if the curve has no point at or before crops_seen / 2."""
    half = [psnr for crops, psnr in points if crops <= crops_seen / 2]
    full = [psnr for crops, psnr in points if crops <= crops_seen]
    gain = max(full) - max(half) if half and full else None
    return TrainingRecord(int(crops_seen), None if gain is None else round(float(gain), 4), curve)
