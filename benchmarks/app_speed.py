"""The demo's speed on this machine: cold start to a served page, and webcam frames per second.

    python benchmarks/app_speed.py [--model models/vgg16-block3_conv3] [--frames 30]

Cold start: `python app.py` in a fresh process (imports, model loading, Gradio start-up) until the
page answers HTTP 200. Webcam path: the handler each streamed frame goes through
(`app.reconstruct_frame`: square crop, resize to 224, encode, decode, PSNR/SSIM) on 640x480 frames.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(model: str, timeout: float = 300) -> float:
    port = free_port()
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--model", model], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"app.py exited with status {server.returncode}") from None
                time.sleep(0.1)
        raise TimeoutError(f"no page after {timeout} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def webcam_fps(model_dir: str, frames: int, precision: str = "auto") -> float:
    """Frames per second of the streaming handler on 640x480 frames, in the app's default precision."""
    import numpy as np

    import app
    from recon import Reconstructor

    model = Reconstructor.from_pretrained(model_dir, precision=precision)
    camera = (np.random.default_rng(0).random((frames + 2, 480, 640, 3)) * 255).astype(np.uint8)
    app.reconstruct_frame(model, camera[0])  # warm-up
    stats = {}
    start = time.perf_counter()
    for frame in camera[1:frames + 1]:
        _, _, stats = app.reconstruct_frame(model, frame, stats)
    return frames / (time.perf_counter() - start)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/vgg16-block3_conv3")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--starts", type=int, default=3, help="cold starts to time (the best is reported too)")
    args = p.parse_args(argv)
    starts = [cold_start(args.model) for _ in range(args.starts)]
    fps = webcam_fps(args.model, args.frames)
    print(f"cold start of python app.py to a served page: best {min(starts):.1f} s, "
          f"mean {sum(starts) / len(starts):.1f} s over {len(starts)} starts")
    print(f"webcam path at 224 (640x480 frames, {args.frames} frames, precision auto): {fps:.1f} frames/s "
          f"({1000 / fps:.0f} ms/frame)")
    return {"cold_start_s": starts, "webcam_fps": fps}


if __name__ == "__main__":
    main()
