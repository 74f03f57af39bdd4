"""The webcam tab as a visitor sees it: frames shown per second and capture-to-display latency, in Chromium.

    python benchmarks/webcam_browser.py [--seconds 25] [--warmup 8] [--model models/vgg16-block3_conv3]

Starts `python app.py` on a free port and Debian's Chromium (Playwright) with a fake camera that plays
a y4m file in which every frame carries its index as a mirror-symmetric code of black and white
blocks (12 bits of index, 4 of check) in the middle of its center square. A script in the page reads
the code, on every animation frame, from the camera's <video> (when the frame reached the page) and
from the reconstruction the page shows (when its reconstruction was shown): the code survives the
reconstruction, so what is counted is what the visitor sees. Reports distinct frames shown per second
and the latency from a frame's arrival in the page to its reconstruction on screen (median, p90), and
the page's own frame-rate line. The camera's frame rate (30/s) caps the first number.

Where the page shows its own per-stage times (the Webcam tab's stage line), they are reported too,
with the cores the app server and this run's Chromium used over the measured time and the load
average (a machine shared with other work slows the model: compare runs made alternately, `--app`
starting an older checkout's app.py for the "before").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = Path("/usr/bin/chromium")
CODE_ROWS, CODE_COLUMNS = 4, 8  # cells of the code; column c and CODE_COLUMNS-1-c carry the same bit
CODE_MARGIN = 0.15  # the code covers the center square less this fraction on each side
INDEX_BITS = 12


def frame_code(index: int) -> list[int]:
    """The 16 bits drawn into frame `index`: 12 bits of index (high first), then the XOR of its nibbles."""
    index %= 1 << INDEX_BITS
    check = (index ^ (index >> 4) ^ (index >> 8)) & 0xF
    value = (index << 4) | check
    return [(value >> (15 - bit)) & 1 for bit in range(16)]


def draw_code(frame: np.ndarray, index: int) -> np.ndarray:
    """`frame` (H, W, 3) uint8 with frame `index`'s code drawn over the middle of its center square."""
    frame = frame.copy()
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    start, size = CODE_MARGIN * side, (1 - 2 * CODE_MARGIN) * side
    bits = frame_code(index)
    half = CODE_COLUMNS // 2
    for row in range(CODE_ROWS):
        y0 = top + int(start + row * size / CODE_ROWS)
        y1 = top + int(start + (row + 1) * size / CODE_ROWS)
        for column in range(half):  # each cell and its mirror image, to the pixel
            x0 = int(start + column * size / CODE_COLUMNS)
            x1 = side // 2 if column == half - 1 else int(start + (column + 1) * size / CODE_COLUMNS)
            value = 255 if bits[row * half + column] else 0
            frame[y0:y1, left + x0:left + x1] = value
            frame[y0:y1, left + side - x1:left + side - x0] = value
    return frame


def write_numbered_y4m(path: Path, frames: int, width: int = 640, height: int = 480, fps: int = 30,
                       background: Path = ROOT / "examples" / "astronaut.jpg") -> Path:
    """A y4m video (I420, `fps` frames/s) of `background` with each frame's index code drawn in."""
    from PIL import Image
    photo = np.asarray(Image.open(background).convert("RGB").resize((width, height)), np.float32)
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(frames):
            rgb = draw_code(photo.astype(np.uint8), index).astype(np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b  # full-range BT.601 (C420jpeg)
            u = 128 + (b - y) * 0.564
            v = 128 + (r - y) * 0.713
            f.write(b"FRAME\n")
            f.write(np.clip(y, 0, 255).astype(np.uint8).tobytes())
            for plane in (u, v):
                f.write(np.clip(plane.reshape(height // 2, 2, width // 2, 2).mean((1, 3)), 0, 255).astype(np.uint8).tobytes())
    return path


# Runs in the page: on every animation frame, the code of the newest camera frame and of the
# reconstruction shown, each time it changes, with performance.now() in ms.
PROBE_JS = """
([inputSelector, outputSelector, rows, columns, margin]) => {
  const probe = window.__probe = {inputs: [], outputs: [], misreads: 0};
  const canvas = document.createElement('canvas');
  canvas.width = 64; canvas.height = 64;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  function read(source, width, height) {
    if (!width || !height) return null;
    const side = Math.min(width, height);
    const x0 = (width - side) / 2 + margin * side, y0 = (height - side) / 2 + margin * side;
    const size = (1 - 2 * margin) * side;
    ctx.drawImage(source, x0, y0, size, size, 0, 0, 64, 64);
    const data = ctx.getImageData(0, 0, 64, 64).data;
    let value = 0;
    const half = columns / 2;
    for (let bit = 0; bit < rows * half; bit++) {
      const row = Math.floor(bit / half), column = bit % half;
      let sum = 0, n = 0;
      for (const c of [column, columns - 1 - column]) {  // a mirrored frame reads the same
        const cx = (c + 0.5) * 64 / columns, cy = (row + 0.5) * 64 / rows;
        for (let dy = -3; dy <= 3; dy++) for (let dx = -1; dx <= 1; dx++) {
          const i = (Math.round(cy + dy) * 64 + Math.round(cx + dx)) * 4;
          sum += data[i] + data[i + 1] + data[i + 2]; n += 3;
        }
      }
      value = (value << 1) | (sum / n > 127 ? 1 : 0);
    }
    const index = value >> 4;
    const check = (index ^ (index >> 4) ^ (index >> 8)) & 0xF;
    if ((value & 0xF) !== check) { probe.misreads++; return null; }
    return index;
  }
  let lastIn = null, lastOut = null, lastSrc = null;
  function tick() {
    const now = performance.now();
    const video = [...document.querySelectorAll(inputSelector)].find(v => v.srcObject && v.readyState >= 2);
    if (video) {
      const index = read(video, video.videoWidth, video.videoHeight);
      if (index !== null && index !== lastIn) { probe.inputs.push([now, index]); lastIn = index; }
    }
    const out = document.querySelector(outputSelector);
    if (out && out.tagName === 'IMG' && out.complete && out.naturalWidth && out.src !== lastSrc) {
      lastSrc = out.src;
      const index = read(out, out.naturalWidth, out.naturalHeight);
      if (index !== null && index !== lastOut) { probe.outputs.push([now, index]); lastOut = index; }
    } else if (out && out.tagName === 'CANVAS' && out.width) {
      const index = read(out, out.width, out.height);
      if (index !== null && index !== lastOut) { probe.outputs.push([now, index]); lastOut = index; }
    }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
}
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(model: str, port: int, log: Path, precision: str, app: Path = ROOT / "app.py",
              env: dict | None = None) -> subprocess.Popen:
    """`python APP` on `port` (with the `recon` beside it), once it serves; its output goes to `log`."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(app).parent)} | (env or {})
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(app), "--port", str(port), "--model", str(ROOT / model),
                                   "--precision", precision], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while f"127.0.0.1:{port}" not in log.read_text():
        if server.poll() is not None or time.time() > deadline:
            server.kill()
            raise RuntimeError(f"app.py did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    return server


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the app server and by this run's Chromium (its processes run in
    this checkout's folder; another checkout's browser does not), for the share of 2 cores each takes."""
    import psutil
    used = {"server": 0.0, "browser": 0.0}
    for process in psutil.process_iter(["pid", "name", "cwd", "cpu_times"]):
        info = process.info
        times = info["cpu_times"]
        if times is None:
            continue
        if info["pid"] == server_pid:
            used["server"] += times.user + times.system
        elif "chrom" in (info["name"] or "") and info["cwd"] == str(ROOT):
            used["browser"] += times.user + times.system
    return used


def start_camera(page) -> None:
    """Open the Webcam tab and start streaming: the tab's own Start button where it has one, else
    Gradio's webcam component (its access button, then its record button)."""
    page.get_by_role("tab", name="Webcam").click()
    start = page.locator("#webcam-start")
    if start.count():
        start.first.click()
        return
    page.get_by_text("Click to Access Webcam").click()
    page.get_by_role("button", name="capture photo").click()


def matched_latencies(inputs: list, outputs: list) -> list[float]:
    """For each shown frame (time, index), ms since the same index last reached the page before it
    (the fake camera loops, so an index recurs once a loop)."""
    latencies = []
    for shown, index in outputs:
        arrived = [t for t, i in inputs if i == index and t <= shown]
        if arrived:
            latencies.append(shown - max(arrived))
    return latencies


def summarize(probe: dict, start_ms: float, end_ms: float) -> dict:
    """Frames shown per second and latency percentiles (ms) over the outputs shown in [start, end)."""
    outputs = [(t, i) for t, i in probe["outputs"] if start_ms <= t < end_ms]
    inputs = [(t, i) for t, i in probe["inputs"] if t < end_ms]
    arrived = [(t, i) for t, i in inputs if t >= start_ms]
    latencies = matched_latencies(inputs, outputs)
    seconds = (end_ms - start_ms) / 1000
    return {
        "seconds": round(seconds, 2),
        "frames_shown": len(outputs),
        "frames_shown_per_s": round(len(outputs) / seconds, 2),
        "camera_frames_per_s": round(len(arrived) / seconds, 2),
        "latency_ms_median": round(float(np.median(latencies)), 1) if latencies else None,
        "latency_ms_p90": round(float(np.percentile(latencies, 90)), 1) if latencies else None,
        "latency_ms_min": round(float(min(latencies)), 1) if latencies else None,
        "unmatched_outputs": len(outputs) - len(latencies),
        "misreads": probe["misreads"],
    }


def run(model: str, seconds: float, warmup: float, precision: str, loop_frames: int = 240,
        output_selector: str = "#webcam-output img, #webcam-output canvas", screenshot: Path | None = None,
        app: Path = ROOT / "app.py", env: dict | None = None) -> dict:
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix="recon-webcam-") as tmp:
        video = write_numbered_y4m(Path(tmp) / "numbered.y4m", loop_frames)
        port = free_port()
        server = start_app(model, port, Path(tmp) / "app.log", precision, app, env)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                    "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                    "--disable-gpu", f"--use-file-for-fake-video-capture={video}"])
                context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}", wait_until="domcontentloaded")
                page.wait_for_selector("#upload-image", timeout=120_000)
                page.evaluate(PROBE_JS, ["video", output_selector, CODE_ROWS, CODE_COLUMNS, CODE_MARGIN])
                start_camera(page)
                page.wait_for_timeout(warmup * 1000)
                start_ms, cpu_before = page.evaluate("performance.now()"), cpu_seconds(server.pid)
                page.wait_for_timeout(seconds * 1000)
                end_ms, cpu_after = page.evaluate("performance.now()"), cpu_seconds(server.pid)
                probe = page.evaluate("window.__probe")
                stats_line = page.inner_text("#webcam-stats")
                stages = page.inner_text("#webcam-stages") if page.locator("#webcam-stages").count() else None
                if screenshot is not None:
                    page.screenshot(path=str(screenshot))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = summarize(probe, start_ms, end_ms)
    result.update(page_says=stats_line, page_stages=stages, load_average=[round(x, 2) for x in os.getloadavg()],
                  cores_used={name: round((cpu_after[name] - cpu_before[name]) / result["seconds"], 2) for name in cpu_after})
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/vgg16-block3_conv3")
    p.add_argument("--precision", default="auto")
    p.add_argument("--seconds", type=float, default=25.0, help="measured time, after the warm-up")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds of streaming before measuring")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "webcam_browser.json")
    p.add_argument("--label", default=None, help="key under which --out records this run (default: not saved)")
    p.add_argument("--screenshot", type=Path, default=None)
    p.add_argument("--app", type=Path, default=ROOT / "app.py",
                   help="the demo to start (an older checkout's app.py, to compare; it imports the recon beside it)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="set for the app")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    result = run(args.model, args.seconds, args.warmup, args.precision, screenshot=args.screenshot, app=args.app, env=env)
    result.update(model=args.model, precision=args.precision, cores=len(os.sched_getaffinity(0)), app=str(args.app),
                  env=env)
    print(json.dumps(result, indent=1))
    if args.label:
        record = json.loads(args.out.read_text()) if args.out.exists() else {}
        record[args.label] = result
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
