"""training.json: what it records, how fit writes it, and that a bad one never stops a model loading."""

import json

import pytest

from recon.training_record import TrainingRecord, from_curve, short_count
from training.record import record_from_history


def test_gain_is_read_over_the_last_doubling_of_crops():
    points = [(1000, 20.0), (2000, 20.5), (4000, 21.0), (8000, 21.6)]
    record = from_curve(points, 8000)
    assert record.gain_last_doubling_db == pytest.approx(0.6) and record.plateaued is False
    assert from_curve(points + [(16000, 21.7)], 16000).plateaued is True  # +0.1 dB from 8k to 16k
    assert from_curve(points, 1500).gain_last_doubling_db is None  # no point at or before 750 crops
    assert "still improving: +0.60 dB validation PSNR" in record.summary() and "8,000 crops" in record.summary()


def test_a_warm_start_counts_its_chain_and_keeps_the_best_epoch():
    history = [{"step": 100, "val_psnr": 20.0}, {"step": 200, "val_psnr": 20.5}, {"step": 300, "val_psnr": 20.4}]
    record = record_from_history(history, batch_size=10)
    assert record.crops_seen == 2000  # the kept (best) epoch, not the last
    counted = [h | {"crops": 990 * (i + 1)} for i, h in enumerate(history)]  # the epochs' own counts win
    assert record_from_history(counted, batch_size=10).crops_seen == 1980
    assert record.gain_last_doubling_db == pytest.approx(0.5)  # from 1000 crops to 2000
    warm = record_from_history(history, batch_size=10, crops_before=1000)
    assert warm.crops_seen == 3000 and warm.plateaued is None  # the run's curve starts after 1500 crops


def test_round_trip_and_untrusted_files(tmp_path):
    TrainingRecord(621_000, 0.29, "held-out").save(tmp_path)
    assert TrainingRecord.load(tmp_path) == TrainingRecord(621_000, 0.29, "held-out")
    assert TrainingRecord.load(tmp_path / "nowhere") is None
    for bad in ('{"crops_seen": "many"}', '{"crops_seen": 1, "gain_last_doubling_db": NaN}', "[1, 2]",
                '{"crops_seen": 1e400}', '{"crops_seen": -5}', '{"crops_seen": true}', "not json", "[" * 100_000,
                '{"crops_seen": 5, "curve": "training"}'):
        (tmp_path / "training.json").write_text(bad)
        with pytest.warns(UserWarning, match="not a training record"):
            assert TrainingRecord.load(tmp_path) is None


def test_counts_read_as_people_write_them():
    assert [short_count(n) for n in (950, 12_345, 621_234, 1_230_000)] == ["950", "12k", "621k", "1.23M"]


def test_fit_writes_the_record_after_each_epoch(tmp_path, photo_dir):
    from tests.test_fit import run_fit
    first = run_fit(photo_dir, tmp_path / "a", tmp_path / "cache", "--epochs", "2")
    record = json.loads((first / "training.json").read_text())
    history = json.loads((first / "history.json").read_text())
    best = max(history, key=lambda h: h["val_psnr"])
    per_epoch = len(json.loads((first / "split.json").read_text())["train"]) * 2  # --crops-per-image 2
    assert [h["crops"] for h in history] == [per_epoch, 2 * per_epoch]  # not steps x batch: a last batch may be short
    assert record["crops_seen"] == best["crops"] and record["curve"] == "validation"
    warm = run_fit(photo_dir, tmp_path / "b", tmp_path / "cache", "--epochs", "1", "--init-from", str(first))
    assert json.loads((warm / "training.json").read_text())["crops_seen"] > record["crops_seen"]
    from recon import Reconstructor
    assert Reconstructor.from_pretrained(warm).training.crops_seen > record["crops_seen"]
