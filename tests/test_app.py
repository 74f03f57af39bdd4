"""The Gradio demo (app.py): its handlers directly, then the served app through gradio_client."""

import json
import re
import logging
import subprocess
import sys
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from recon import ReconConfig, Reconstructor
from recon.training_record import TrainingRecord
from tests.conftest import free_port, smooth_image

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(layer="block2_conv2", channels=128) -> ReconConfig:
    return ReconConfig(layer=layer, image_size=32, encoder_weights="random", decoder_width=8,
                       num_res_blocks=1, feature_scale=[1.0] * channels)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Two tiny random models, as models/ would hold per-layer folders."""
    root = tmp_path_factory.mktemp("models")
    Reconstructor(tiny_config()).save_pretrained(root / "tiny-block2_conv2")
    Reconstructor(tiny_config("block1_conv2", 64)).save_pretrained(root / "tiny-block1_conv2")
    TrainingRecord(12_000, 0.5).save(root / "tiny-block1_conv2")  # the other folder records no training
    return root


@pytest.fixture(scope="module")
def model(models_dir):
    return Reconstructor.from_pretrained(models_dir / "tiny-block2_conv2")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A good photo, and files the safe loader must turn into readable messages or handle."""
    d = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(d / "good.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (d / "text.jpg").write_text("not an image at all")
    Image.new("1", (8000, 6000)).save(d / "huge.png")  # 48 megapixels in a few kB
    Image.fromarray(rng.integers(0, 65535, (40, 30), dtype=np.uint16)).save(d / "gray16.png")
    Image.new("CMYK", (30, 20), (10, 200, 30, 0)).save(d / "cmyk.jpg")
    Image.new("RGBA", (30, 20), (255, 0, 0, 100)).save(d / "alpha.png")
    Image.new("P", (30, 20)).save(d / "palette.gif")
    return d


# -- handlers ---------------------------------------------------------------------------------------
def test_import_loads_no_model_and_uses_no_network():
    code = ("import socket\n"
            "def refuse(*a, **k): raise AssertionError('network used at import time')\n"
            "socket.socket.connect = refuse\n"
            "import recon.pipeline as p\n"
            "def no_load(*a, **k): raise AssertionError('model loaded at import time')\n"
            "p.Reconstructor.from_pretrained = no_load\n"
            "p.Reconstructor.__init__ = no_load\n"
            "import app\n"
            "assert 'hub' not in __import__('sys').modules\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith("ok"), done.stderr[-2000:]


@pytest.mark.parametrize("resolution, shape", [("trained", (32, 32, 3)), ("scaled", (32, 44, 3)),
                                               ("native", (50, 70, 3))])
def test_reconstruct_upload_sizes_and_metrics(model, images, resolution, shape):
    (x, y), heat, metrics, download, status = app.reconstruct_upload(model, str(images / "good.png"), resolution)
    assert x.shape == y.shape == heat.shape == shape and y.dtype == np.uint8
    assert set(metrics) == {"mse", "psnr", "ssim", "lpips"} and all(np.isfinite(v) for v in metrics.values())
    assert np.asarray(Image.open(download)).shape == shape and download.endswith("good_block2_conv2_reconstruction.png")
    assert f"{shape[1]}×{shape[0]}" in status


def test_native_size_is_capped(model, monkeypatch, images):
    monkeypatch.setattr(app, "MAX_NATIVE_SIDE", 36)
    (_, y), *_ = app.reconstruct_upload(model, str(images / "good.png"), "native")
    assert y.shape[:2] == (26, 36)
    (_, y), *_ = app.reconstruct_upload(model, str(images / "good.png"), "scaled")
    assert y.shape[:2] == (26, 36)  # the whole image, short side 32 but long side capped


def test_scaled_keeps_the_whole_image_at_the_trained_scale(model):
    assert app.inference_size(model, np.zeros((600, 200, 3)), "scaled") == (96, 32)  # short side at 32
    assert app.inference_size(model, np.zeros((10, 20, 3)), "scaled") == (32, 64)  # small images grow
    assert app.inference_size(model, np.zeros((10, 20, 3)), "trained") == "trained"


def test_percentages_never_round_to_a_false_claim():
    assert [app.percent(f) for f in (0, 0.00004, 0.5, 0.9996, 1)] == ["0.0%", "<0.1%", "50.0%", ">99.9%", "100.0%"]


def test_page_errors_give_one_toast_and_one_log_line(caplog):
    @app.page_errors(outputs=3, status=2)
    def expected(path):
        raise ValueError(f"image too small: {path}")

    @app.page_errors(outputs=2, status=0)
    def bug():
        return {}["missing"]

    @app.page_errors(outputs=2, status=1)
    def streamed():
        yield "partial", "working…"
        raise app.ImageLoadError("not a readable image")

    @app.page_errors()
    def without_status():
        raise gr.Error("No model named 'x'")

    with caplog.at_level(logging.INFO, logger="recon.app"):
        # the event does not fail (Gradio would drop the next deferred input); the status says why
        assert expected("x.png") == (None, None, "⚠ image too small: x.png")
        assert "Traceback" not in caplog.text and "expected: image too small: x.png" in caplog.text
        assert bug() == ("⚠ Something went wrong (KeyError: 'missing').", None)
        assert "Traceback" in caplog.text  # a bug keeps its traceback, in the log
        assert list(streamed()) == [("partial", "working…"), (None, "⚠ not a readable image")]
    with pytest.raises(gr.Error, match="No model named") as info:
        without_status()
    assert info.value.print_exception is False  # Gradio prints no traceback for it
    with pytest.raises(gr.Error) as info:  # the follow-up event's toast
        app.raise_failure("⚠ image too small: x.png")
    assert info.value.message == "image too small: x.png" and info.value.print_exception is False
    app.raise_failure("Reconstructed at 32×32")  # success: no toast
    app.raise_failure(None)


def test_reconstruct_frame_reports_fps(model):
    frame = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out, line, stats = app.reconstruct_frame(model, None, {})
    assert out is None and "Waiting" in line
    for _ in range(3):
        out, line, stats = app.reconstruct_frame(model, frame, stats)
    assert out.shape == (32, 32, 3) and stats["frames"] == 3 and stats["fps"] > 0
    assert "PSNR" in line and "SSIM" in line and "fps" in line
    gray, _, _ = app.reconstruct_frame(model, frame[..., 0], {})
    rgba, _, _ = app.reconstruct_frame(model, np.dstack([frame, frame[..., :1]]), {})
    assert gray.shape == rgba.shape == (32, 32, 3)


def jpeg_url(image: np.ndarray, kind: str = "JPEG") -> str:
    import base64
    import io
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def test_live_frame_returns_the_reconstruction_as_a_jpeg_and_the_server_stage_times(model):
    frame = smooth_image(48, 64, 2)
    reply = app.live_frame(model, jpeg_url(frame))
    shown = app.decode_live_frame(reply["image"])  # the page shows it as it comes: a JPEG data URL
    assert shown.shape == (32, 32, 3) and reply["size"] == model.config.image_size
    assert np.isfinite(reply["psnr"]) and reply["ssim"] is None  # SSIM only when the page asks (once a second)
    assert set(reply["ms"]) == {"decode", "model", "metrics", "encode"} and all(v >= 0 for v in reply["ms"].values())
    with_ssim = app.live_frame(model, jpeg_url(frame, "PNG"), with_ssim=True)
    assert 0 < with_ssim["ssim"] <= 1
    exact = model.reconstruct(app.decode_live_frame(jpeg_url(frame))).output
    to_exact, to_input = (np.abs(shown / 255.0 - x).mean() for x in (exact, model.prepare(frame)))
    assert to_exact < 0.05 and to_exact < to_input / 2  # the reconstruction goes back (JPEG q90), not the frame


@pytest.mark.parametrize("bad, message", [
    (None, "data URL"), ("data:text/plain;base64,aGk=", "data URL"), ("data:image/jpeg;base64,@@@", "base64"),
    ("data:image/jpeg;base64," + "A" * (3 * 1024 * 1024), "under 2 MB"), ("data:image/jpeg;base64,aGVsbG8=", "image"),
])
def test_live_frame_refuses_what_is_not_a_camera_frame(model, bad, message):
    with pytest.raises(ValueError, match=message):
        app.live_frame(model, bad)


def test_live_frame_refuses_a_frame_too_large(model):
    with pytest.raises(ValueError, match="at most 2048 px"):
        app.decode_live_frame(jpeg_url(np.zeros((8, 2100, 3), np.uint8), "PNG"))


def test_the_webcam_tab_runs_its_own_loop_through_a_server_function(models_dir):
    demo = app.build_demo(models_dir / "tiny-block2_conv2", models_dir=models_dir, time_limit=30)
    live = next(b for b in demo.blocks.values() if isinstance(b, gr.HTML) and b.elem_id == "webcam-live")
    assert [fn.__name__ for fn in live.server_fns] == ["live_frame"]
    frame = np.random.default_rng(3).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    reply = live.live_frame({"image": jpeg_url(frame), "model": None, "ssim": True})
    assert app.decode_live_frame(reply["image"]).shape == (32, 32, 3) and 0 < reply["ssim"] <= 1
    assert live.live_frame({"image": "not a frame"})["error"].startswith("a webcam frame must be")
    assert "No model named" in live.live_frame({"image": jpeg_url(frame), "model": "nope"})["error"]
    assert live.live_frame("not an object")["error"] == "a webcam request must be an object"
    assert "began > 30 * 1000" in live.js_on_load and not re.search(r"IN_FLIGHT|TIME_LIMIT_S|WINDOW_S", live.js_on_load)


def test_feature_view(model, images):
    tiles, large, summary, shown = app.feature_view(model, str(images / "good.png"), "trained", 5, 7)
    assert shown == 7 and len(tiles) == 5 and all(t.dtype == np.uint8 for t, _ in tiles)
    assert all(caption.startswith("ch ") and "mean" in caption for _, caption in tiles)
    assert large.ndim == 3 and "16 × 16 × 128" in summary and "sparsity" in summary and "Channel 7" in summary
    with pytest.raises(gr.Error, match="0 to 127"):
        app.feature_view(model, str(images / "good.png"), "trained", 5, 128)
    *_, strongest = app.feature_view(model, str(images / "good.png"), "trained", 5)
    assert tiles[0][1].startswith(f"ch {strongest} ")  # by default the strongest channel is shown large
    assert app.tile_index(tiles, strongest) == 0
    assert app.tile_index(tiles, int(tiles[3][1].split()[1])) == 3 and app.tile_index(tiles, 999) is None
    # a click on a tile shows the channel its caption names (the Features tab's on_pick_tile)
    assert [app.tile_channel(caption) for _, caption in tiles] == [int(c.split()[1]) for _, c in tiles]
    assert app.tile_channel(None) == app.tile_channel("mean 3") == 0


def test_every_global_name_the_app_uses_exists():
    """A name a handler uses but app.py no longer imports fails only when that handler runs: in the
    browser, as a click that never answers (a dropped `import re` once did that to tile clicks)."""
    import builtins
    import dis
    code = compile((ROOT / "app.py").read_text(encoding="utf-8"), "app.py", "exec")
    functions, used = [code], set()
    while functions:
        current = functions.pop()
        functions += [c for c in current.co_consts if isinstance(c, type(code))]
        if current is not code:  # module-level code ran at import; functions run later
            used |= {i.argval for i in dis.get_instructions(current) if i.opname == "LOAD_GLOBAL"}
    assert {"re", "feature_view", "tile_channel"} <= used
    assert sorted(name for name in used if not hasattr(app, name) and not hasattr(builtins, name)) == []


def test_compare_layers_goes_shallow_to_deep(models_dir, images):
    store = app.resolve_models(None, None, models_dir)
    tiles, figure, table = app.compare_layers(store.one_per_layer(), str(images / "good.png"), "trained")
    assert [caption.split(" ·")[0] for _, caption in tiles] == ["input 32×32", "block1_conv2", "block2_conv2"]
    assert all(t.shape == (32, 32, 3) for t, _ in tiles) and "dB" in tiles[1][1] and "LPIPS" in tiles[2][1]
    assert table.count("\n| block") == 2 and len(figure.axes) == 2
    assert tiles[1][1].endswith("12k crops, still improving") and tiles[2][1].endswith("training not recorded")
    assert "undertraining, not what the layer has lost" in table
    block1 = store.get("tiny-block1_conv2")
    assert store.get("VGG16 · tiny-block1_conv2") is block1  # the picker's label, as the webcam page sends it
    assert "trained on 12k crops; still improving: +0.50 dB" in app.model_info(block1, "b1", models_dir / "tiny-block1_conv2")
    with pytest.raises(gr.Error, match="Upload an image"):
        app.compare_layers(store.one_per_layer(), None)


@pytest.mark.parametrize("mode, expect", [("top_k", "kept the 4 strongest of 128"), ("zero_channel", "zeroed channel 3"),
                                          ("quantize", "quantized to 2 bits")])
def test_ablate(model, images, mode, expect):
    plain, altered, diff, metrics = app.ablate(model, str(images / "good.png"), "trained", mode, 4, 3, 2)
    assert plain.shape == altered.shape == diff.shape == (32, 32, 3)
    assert metrics["ablation"].startswith(expect)
    assert all(np.isfinite(metrics[k]["psnr"]) for k in ("unaltered", "altered"))
    assert 0 < metrics["features_changed"] <= 1


def test_refine_upload_streams_until_the_last_step(model, images):
    frames = list(app.refine_upload(model, str(images / "good.png"), steps=6, every=2, learning_rate=1e-2))
    assert [m["step"] for *_, m in frames] == [0, 2, 4, 6]
    errors = [m["relative_feature_error"] for *_, m in frames]
    assert errors[-1] < errors[0]
    guess, refined, change, status, metrics = frames[-1]
    assert guess.shape == refined.shape == change.shape == (32, 32, 3)
    assert not np.array_equal(guess, refined) and "Step **6 / 6**" in status
    assert metrics["decoder"]["psnr"] == frames[0][-1]["refined"]["psnr"]  # step 0 is the decoder's guess


def test_refine_stops_at_the_next_frame_and_says_where(model, images):
    stops = app.StopRequests()
    with stops.listen("visitor") as stop, stops.listen("other") as other:
        frames = app.refine_upload(model, str(images / "good.png"), steps=10, every=2, learning_rate=1e-2, stop=stop)
        next(frames), next(frames)  # steps 0 and 2
        stops.request("visitor")
        rest = list(frames)
        assert not other.is_set()  # another session's refinement runs on
    assert [m["step"] for *_, m in rest] == [4]
    assert "Stopped at step **4 / 10**" in rest[0][3]
    stops.request("visitor")  # after the run: nothing to stop, no error


def test_refine_upload_caps_steps_and_rejects_bad_files(model, images):
    frames = app.refine_upload(model, str(images / "good.png"), steps=10_000, every=10_000)
    assert [m["step"] for *_, m in frames] == [0, app.MAX_REFINE_STEPS]
    with pytest.raises(gr.Error, match="Cannot use this file"):
        next(app.refine_upload(model, str(images / "corrupt.png")))


def test_model_info_reads_card_and_metrics(model, tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\ndatasets: [photos-a, photos-b]\n---\n# Card\n\n"
                                        "## Training data\n\n3,000 CC0 photos.\n\n## Limits\n\nnone\n")
    (tmp_path / "metrics_summary.json").write_text(json.dumps(
        {"psnr": {"mean": 21.5, "std": 2.0}, "ssim": {"mean": 0.61, "std": 0.1}, "count": 40, "data": "holdout"}))
    info = app.model_info(model, "tiny", tmp_path)
    for text in ("vgg16", "block2_conv2", "random", f"{model.decoder.count_params():,}", "license | mit",
                 "photos-a, photos-b", "3,000 CC0 photos", "21.5", "0.61", "40 images", "Precision | float32"):
        assert text in info, text
    assert "Limits" not in info
    assert "| Setting | Value |" in info  # a header row, not an empty first row
    assert str(tmp_path.parent) not in info and f"| Source | {tmp_path.name} |" in info  # no server paths
    bundled = app.model_info(model, "vgg16-block3_conv3", app.BUNDLED_MODEL)
    assert "| Source | models/vgg16-block3_conv3 |" in bundled
    bare = app.model_info(model, "tiny", None)
    assert "No held-out metrics" in bare and "Not described" in bare
    assert "random weights: tests only" in app.random_weights_banner(model)


def test_failed_hub_pull_falls_back_with_notice(models_dir, monkeypatch, caplog):
    def offline(repo, revision=None, **kwargs):
        raise ConnectionError(f"cannot reach the Hub for {repo}")
    monkeypatch.setitem(sys.modules, "hub", types.SimpleNamespace(from_pretrained=offline))
    with caplog.at_level(logging.WARNING, logger="recon.app"):
        store = app.resolve_models("someone/recon-model", "v1", models_dir)
    assert store.default in store.names and store.loaded[store.default]
    # the console gets the reason; the page says what happened, without server details
    assert "Could not pull someone/recon-model@v1: cannot reach the Hub" in caplog.text
    assert store.notice == (f"Could not load the model someone/recon-model (the server log says why). "
                            f"Using {store.default} instead.")


@pytest.mark.parametrize("typo", ["models/vgg16-block3_conv", "./mine", "/srv/models/x", "runs/a/b"])
def test_a_mistyped_folder_is_not_taken_for_a_hub_repo(models_dir, monkeypatch, typo, caplog):
    def must_not_pull(repo, revision=None, **kwargs):
        raise AssertionError(f"tried the Hub for {repo}")
    monkeypatch.setitem(sys.modules, "hub", types.SimpleNamespace(from_pretrained=must_not_pull))
    with caplog.at_level(logging.WARNING, logger="recon.app"):
        store = app.resolve_models(typo, None, models_dir)
    assert f"Could not load {typo}: no model folder there." in caplog.text
    assert store.default and "/root" not in store.notice and "python -m" not in store.notice
    assert "instead Using" not in store.problem + store.notice


def test_hub_model_and_local_folders(models_dir, monkeypatch, tmp_path):
    pulled = Reconstructor(tiny_config())
    monkeypatch.setitem(sys.modules, "hub",
                        types.SimpleNamespace(from_pretrained=lambda repo, revision=None, **kwargs: pulled))
    store = app.resolve_models("someone/recon-model", None, models_dir)
    assert store.default == "someone/recon-model" and store.get(None) is pulled and not store.notice
    assert set(store.names) == {"someone/recon-model", "tiny-block2_conv2", "tiny-block1_conv2"}
    local = app.resolve_models(models_dir / "tiny-block1_conv2", None, models_dir)
    assert local.default == "tiny-block1_conv2" and local.get(None).config.layer == "block1_conv2"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    broken = app.resolve_models(tmp_path / "broken", None, models_dir)
    assert "Could not load" in broken.notice and broken.default in ("tiny-block2_conv2", "tiny-block1_conv2")
    empty = app.resolve_models(None, None, tmp_path / "nothing")
    assert empty.default is None and "No model" in empty.notice
    with pytest.raises(gr.Error, match="No model"):
        empty.get(None)


# -- the served app, through gradio_client (acceptance 1) --------------------------------------------
@pytest.fixture(scope="module")
def client(models_dir):
    from gradio_client import Client
    demo = app.build_demo(models_dir / "tiny-block2_conv2", models_dir=models_dir)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_port=free_port())
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def test_client_every_event_has_an_api_name(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/reconstruct", "/webcam_frame", "/features", "/show_channel", "/pick_channel", "/ablate",
            "/select_model", "/refine", "/layers"} <= set(endpoints)


def test_client_reconstruct_then_corrupt_then_good(client, images):
    from gradio_client import handle_file
    slider, heat, metrics, download, status = client.predict(handle_file(str(images / "good.png")), "native",
                                                             "tiny-block2_conv2", api_name="/reconstruct")
    assert Image.open(slider[1]).size == Image.open(download).size == (70, 50)
    assert all(np.isfinite(v) for v in metrics.values())
    *outputs, status = client.predict(handle_file(str(images / "corrupt.png")), "trained", api_name="/reconstruct")
    assert outputs == [None] * 4 and status.startswith("⚠ Cannot use this file: corrupt.png: ")
    slider, _, metrics, download, _ = client.predict(handle_file(str(images / "good.png")), "trained",
                                                     api_name="/reconstruct")
    assert Image.open(download).size == (32, 32) and np.isfinite(metrics["psnr"])


def test_client_features_ablation_and_model_switch(client, images):
    from gradio_client import handle_file
    good = handle_file(str(images / "good.png"))
    tiles, large, summary, strongest = client.predict(good, "trained", 6, "tiny-block2_conv2", 2, False,
                                                      api_name="/features")
    strongest = strongest["value"]
    assert len(tiles["value"]) == 6 and "sparsity" in summary and f"Channel {strongest}:" in summary
    *_, kept = client.predict(good, "trained", 6, "tiny-block2_conv2", 2, True, api_name="/features")
    assert kept["value"] == 2  # the visitor's pick for this model and image, kept by a refresh
    large, summary, tiles, shown = client.predict(good, "trained", 6, 2, "tiny-block2_conv2", False,
                                                  api_name="/show_channel")
    assert "Channel 2:" in summary and len(tiles["value"]) == 6 and shown == {"__type__": "update"}  # left alone
    *_, shown = client.predict(good, "trained", 6, 2, "tiny-block2_conv2", True, api_name="/show_channel")
    assert shown == 2  # unless a refresh was pending when the pick was made
    client.predict(good, "trained", 6, 5, "tiny-block2_conv2", False, api_name="/show_channel")
    *_, summary, kept = client.predict(good, "trained", 6, "tiny-block2_conv2", 2, True, api_name="/features")
    assert kept["value"] == 5 and "Channel 5:" in summary  # the newest pick run, not the slider the refresh read
    *_, other = client.predict(good, "trained", 6, "tiny-block1_conv2", 2, True, api_name="/features")
    assert other["value"] == 2  # a pick made on another model is not this one's
    *_, metrics, status = client.predict(good, "trained", "quantize", 8, 0, 1, api_name="/ablate")
    assert metrics["ablation"].startswith("quantized to 1 bit") and status.startswith("good.png, tiny-block2_conv2: quantized")
    banner, info, *_ = client.predict("tiny-block1_conv2", api_name="/select_model")
    assert "block1_conv2" in info and "random weights" in banner
    *_, metrics, _ = client.predict(good, "trained", "top_k", 4, 0, 2, "tiny-block1_conv2", api_name="/ablate")
    assert "of 64 channels" in metrics["ablation"]
    *_, status, metrics = client.predict(good, 10, "tiny-block1_conv2", api_name="/refine")  # the last frame
    assert metrics["step"] == 10 and "Step **10 / 10**" in status
    gallery, plot, table, status = client.predict(good, "scaled", api_name="/layers")
    assert len(gallery) == 3 and "block1_conv2" in table and status == "good.png, 2 layers."


def test_client_no_upload_gets_the_same_friendly_text_on_every_tab(client):
    assert client.predict(None, "trained", 6, api_name="/features")[2] == app.NO_UPLOAD
    assert client.predict(None, "trained", "top_k", 4, 0, 2, api_name="/ablate")[-1] == app.NO_UPLOAD
    assert client.predict(None, 10, api_name="/refine")[3] == app.NO_UPLOAD
    assert client.predict(None, "trained", api_name="/layers")[-1] == app.NO_UPLOAD


@pytest.mark.parametrize("size", [(1, 1), (9, 40), (24, 3000)])
def test_tiny_images_at_own_size_reconstruct_and_say_which_metric_is_undefined(model, tmp_path, size):
    from PIL import Image
    path = tmp_path / "tiny.png"
    Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(path)
    (x, y), heat, metrics, download, status = app.reconstruct_upload(model, str(path), "native")
    assert x.shape == y.shape and np.isfinite(metrics["psnr"])
    assert metrics["ssim"] is None and metrics["lpips"] is None
    assert "SSIM needs at least 11 px" in status and "LPIPS needs at least 31 px" in status


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from /proc/net/tcp (Linux)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc (Linux)")
def test_gradio_server_variables_choose_host_and_port(tmp_path):
    """As Hugging Face Spaces and Docker set-ups start it: no flags, GRADIO_SERVER_NAME/PORT set."""
    import os
    import time
    import urllib.request

    from tests.conftest import free_port, smooth_image
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=Path(app.__file__).parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, "app.py exited"
                time.sleep(0.5)
        assert listening_addresses(port) == {"0.0.0.0"}
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- untrusted model folders (issue 30) ----------------------------------------------------------------
def test_pathological_model_cards_parse_in_linear_time(tmp_path):
    """Both old regular expressions backtracked: these 200 kB cards would take minutes (32 kB took
    seconds), so a return to them hangs here visibly."""
    (tmp_path / "README.md").write_text("---" + " \n" * 100_000)  # front matter that never closes
    meta, body = app.read_model_card(tmp_path)
    assert meta == {} and body.startswith("---") and len(body) == 200_003
    body = "#" * 200_000 + "\n## Training data\n\n3,000 CC0 photos.\n" + "#" * 7 + " not a heading\n## Limits\n"
    assert app.card_section(body, "training data") == "3,000 CC0 photos.\n####### not a heading"
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# Card\n" + "## Training data\n" + "x " * 100_000)
    meta, body = app.read_model_card(tmp_path)
    assert meta == {"license": "mit"} and app.card_section(body, "Training").startswith("x x")
    assert app.card_section("# Card\n## Limits\nnone\n", "training") == ""


@pytest.mark.parametrize("front", ["key: " + "1" * 5000, "[" * 1000 + "]" * 1000, "- a\n- b", "a: b: c: [", "x" * 70_000])
def test_front_matter_that_is_no_mapping_counts_as_none(model, tmp_path, front):
    (tmp_path / "README.md").write_text(f"---\n{front}\n---\n## Training data\n\nphotos\n")
    meta, body = app.read_model_card(tmp_path)
    assert meta == {} and app.card_section(body, "training data") == "photos"
    assert "photos" in app.model_info(model, "tiny", tmp_path)


@pytest.mark.parametrize("summary, shown, hidden", [
    ({"psnr": {"mean": "high", "std": [1]}, "ssim": "x", "count": "many", "data": 5}, "No held-out metrics", "high"),
    ({"psnr": {"mean": 21.5, "std": "x"}, "ssim": {"mean": None}, "count": [1], "data": {"a": 1}, "size": [2]},
     "| PSNR | 21.5 | ? |", "[1]"),
    ({"psnr": {"mean": 21.5, "std": 1.0}, "count": 40, "data": "/home/me/holdout", "size": {"x": 1}},
     "(40 images from `holdout` at size ?)", "/home/me"),
    ([1, 2, 3], "No held-out metrics", "| PSNR"),
    ({"psnr": {"mean": float("nan")}}, "No held-out metrics", "nan"),
])
def test_metrics_summary_of_wrong_types_never_breaks_the_model_tab(model, tmp_path, summary, shown, hidden):
    (tmp_path / "metrics_summary.json").write_text(json.dumps(summary))
    info = app.model_info(model, "tiny", tmp_path)
    assert shown in info and hidden not in info


def test_a_broken_folder_is_skipped_never_fatal(models_dir, tmp_path, caplog):
    """Under models/: one with an unusable config.json, one whose weights are not the config's; as
    --model: each falls back to a working one with a notice."""
    import shutil
    local = tmp_path / "models"
    shutil.copytree(models_dir / "tiny-block1_conv2", local / "a-good")
    bad_weights = Path(shutil.copytree(models_dir / "tiny-block2_conv2", local / "b-bad-weights"))
    (bad_weights / "decoder.weights.h5").write_bytes(b"not hdf5")
    bad_config = Path(shutil.copytree(models_dir / "tiny-block2_conv2", local / "b-bad-config"))
    (bad_config / "config.json").write_text(json.dumps(
        json.loads((bad_config / "config.json").read_text()) | {"image_size": "224", "layer": ["x"]}))
    shutil.copytree(models_dir / "tiny-block2_conv2", local / "c-good")
    with caplog.at_level(logging.WARNING, logger="recon.app"):
        store = app.resolve_models(None, None, local)
        assert store.default == "a-good" and not store.notice
        assert "b-bad-config" not in store.names and "b-bad-config" in store.skipped  # not offered
        assert "model b-bad-config skipped" in caplog.text
        models = store.one_per_layer()  # the Layers tab: block2_conv2's first folder is passed over
        assert "model b-bad-weights skipped" in caplog.text
    assert [m.config.layer for m in models] == ["block1_conv2", "block2_conv2"] and store.loaded["c-good"] in models
    assert "decoder.weights.h5" in store.skipped["b-bad-weights"]
    with pytest.raises(gr.Error, match="Cannot load model b-bad-weights"):  # the picker: a toast, for that pick
        store.get("b-bad-weights")
    assert store.get(None) is store.loaded["a-good"]
    for folder in (bad_config, bad_weights):
        fallback = app.resolve_models(folder, None, local)
        assert fallback.default == "a-good" and fallback.loaded["a-good"]
        assert fallback.notice == f"Could not load the model {folder} (the server log says why). Using a-good instead."


def test_reconstructions_for_download_do_not_pile_up_in_tmpdir(model, images, tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(app, "DOWNLOADS", app.DownloadFolder(keep=3))
    downloads = [app.reconstruct_upload(model, str(images / "good.png"))[3] for _ in range(6)]
    folders = list(tmp_path.glob("recon_*"))
    assert len(folders) == 1 and len(list(folders[0].rglob("*.png"))) == 3  # the newest three
    assert all(Path(d).is_file() for d in downloads[-3:]) and not Path(downloads[0]).exists()
    assert len(set(downloads)) == 6 and Path(downloads[-1]).name == "good_block2_conv2_reconstruction.png"
