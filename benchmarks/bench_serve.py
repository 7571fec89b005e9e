"""Benchmark ``fer-bench serve`` on loopback: throughput, latency percentiles, errors, and its overhead.

Starts ``fer-bench serve`` on 127.0.0.1 (a free port) and sends it real
photos: 640x480 JPEG frames with one to three real faces each (the portraits
shipped with scikit-image and matplotlib, plus FER-2013 faces enlarged when
``--data`` points at the dataset; :func:`benchmarks.bench_predict.make_frames`).
Three measurements, all on the same photos:

- **direct**: :func:`fer_bench.predict.decode_image` + :func:`fer_bench.predict.predict_array`
  (what a server worker runs for one request) called in this process, one photo at a time;
- **one client**: requests one after another over one keep-alive connection,
  so the latency against *direct* is the server's overhead per request
  (HTTP, the multipart-free raw upload, the hand-over to a worker process, JSON);
- **load**: ``--clients`` concurrent clients (default 20), at most
  ``--requests`` requests in all (default 1,000) and ``--time-cap`` seconds;
  throughput, p50/p95/p99 latency, 503 refusals (a refused client waits
  ``Retry-After``) and errors (any other failure).

With ``--screenshot PNG`` it also opens the page in headless Chromium,
uploads the two portraits side by side and saves a screenshot of the annotated
page (needs selenium, chromium and chromedriver).

Run::

    python benchmarks/bench_serve.py MODEL [--data ../shared/data/fer2013] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_predict import load_faces, make_frames, portraits  # noqa: E402


def make_photos(data_path, n: int) -> list:
    """``n`` JPEG-encoded 640x480 photos of real faces (bytes)."""
    import cv2

    fer_faces = None
    if data_path is not None and Path(data_path).exists():
        fer_faces, _ = load_faces(data_path, 200)
    photos = []
    for frame, _ in make_frames(n, fer_faces=fer_faces):
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        photos.append(encoded.tobytes())
    return photos


def percentiles(seconds) -> dict:
    ms = 1000 * np.asarray(seconds, dtype=np.float64)
    if not len(ms):
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())}


# --------------------------------------------------------------------------- direct


def load_direct(model_path, *, workers: int):
    """The model, loaded here, with the thread limits a server worker sets (:func:`fer_bench.serve.cpu_count`)."""
    import cv2
    from threadpoolctl import threadpool_limits

    from fer_bench.models import load_model
    from fer_bench.serve import cpu_count

    threads = max(1, cpu_count() // workers)
    cv2.setNumThreads(threads)
    threadpool_limits(threads)
    return load_model(model_path)


def time_direct(model, photos, *, rounds: int = 1) -> dict:
    """Seconds per photo of decode + predict_array in this process, one photo at a time."""
    from fer_bench.predict import PredictOptions, decode_image, predict_array

    options = PredictOptions()
    predict_array(model, decode_image(photos[0], "warm-up"), source="warm-up", options=options)
    times = []
    for _ in range(rounds):
        for data in photos:
            start = time.perf_counter()
            predict_array(model, decode_image(data, "photo"), source="photo", options=options)
            times.append(time.perf_counter() - start)
    return {"requests": len(times), "per_second": len(times) / sum(times), **percentiles(times)}


def merge_direct(before: dict, after: dict) -> dict:
    """One row from the direct runs before and after the server's (the machine's load drifts)."""
    n = before["requests"] + after["requests"]
    seconds = before["requests"] / before["per_second"] + after["requests"] / after["per_second"]
    return {"requests": n, "per_second": n / seconds,
            **{k: (before[k] + after[k]) / 2 for k in ("p50", "p95", "p99", "mean")},
            "before": before, "after": after}


# --------------------------------------------------------------------------- the server


def start_server(model_path, *, workers: int, queue: int):
    """``(process, url)``: ``fer-bench serve`` on a free loopback port, once its workers are ready."""
    script = Path(sys.executable).with_name("fer-bench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fer_bench.cli"]
    process = subprocess.Popen([*command, "serve", "--model", str(model_path), "--host", "127.0.0.1",
                                "--port", "0", "--workers", str(workers), "--queue", str(queue)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise SystemExit(f"fer-bench serve did not start (exit status {process.wait()})")
    return process, url


def run_clients(url, photos, *, clients: int, requests: int, time_cap: float) -> dict:
    """``clients`` threads, each on its own keep-alive connection, until ``requests`` are sent or time is up."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    lock = threading.Lock()
    counter = {"next": 0}
    ok, refused, errors, error_kinds = [], [0], [0], {}
    deadline = time.perf_counter() + time_cap

    def take():
        with lock:
            if counter["next"] >= requests or time.perf_counter() > deadline:
                return None
            counter["next"] += 1
            return counter["next"] - 1

    def client():
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        while (index := take()) is not None:
            data = photos[index % len(photos)]
            start = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", body=data, headers={"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                body = response.read()
                elapsed = time.perf_counter() - start
                if response.status == 200 and json.loads(body)["records"]:
                    with lock:
                        ok.append(elapsed)
                elif response.status == 503:
                    with lock:
                        refused[0] += 1
                    time.sleep(float(response.getheader("Retry-After", "1")))
                else:
                    with lock:
                        errors[0] += 1
                        error_kinds[str(response.status)] = error_kinds.get(str(response.status), 0) + 1
            except (OSError, http.client.HTTPException) as error:
                with lock:
                    errors[0] += 1
                    error_kinds[type(error).__name__] = error_kinds.get(type(error).__name__, 0) + 1
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "sent": counter["next"], "ok": len(ok), "refused_503": refused[0],
            "errors": errors[0], "error_kinds": error_kinds, "seconds": wall, "per_second": len(ok) / wall,
            **percentiles(ok)}


def screenshot(url, photo_path: Path, out: Path) -> None:
    """Headless Chromium opens the page, uploads ``photo_path`` and saves the page as a PNG at ``out``."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1100,700", "--hide-scrollbars", f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")),
                                  options=options)
        try:
            driver.get(url)
            WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "model").text.startswith("Model "))
            driver.find_element(By.ID, "file").send_keys(str(photo_path))
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay .face-box"))
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    import io

    from PIL import Image

    # 256 colours (dithered) keep the photo legible at about a third of the full-colour size.
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256).save(out, optimize=True)


def screenshot_photo(folder: Path) -> Path:
    """The two portraits side by side, as a JPEG in ``folder``."""
    import cv2

    (_, astronaut), (_, hopper) = portraits()[:2]
    pair = np.full((640, 1100, 3), 235, np.uint8)
    pair[64:576, 20:532] = astronaut
    hopper = cv2.resize(hopper, (480, 562), interpolation=cv2.INTER_AREA)
    pair[39:601, 590:1070] = hopper
    path = folder / "portraits.jpg"
    cv2.imwrite(str(path), pair, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


# --------------------------------------------------------------------------- report


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(results: dict) -> str:
    direct, single, load = results["direct"], results["one_client"], results["load"]
    lines = [
        f"model {results['model']}, {results['photos']} photos (640x480 JPEG, {results['faces_per_photo']:.1f} "
        f"faces each), server: {results['workers']} worker(s), queue {results['queue']}",
        "",
        "| run | requests | ok | 503 | errors | req/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| direct: decode + predict_array, one at a time, before and after | {direct['requests']} | "
        f"{direct['requests']} | - | - | "
        f"{direct['per_second']:.1f} | {_ms(direct['p50'])} | {_ms(direct['p95'])} | {_ms(direct['p99'])} |",
    ]
    for name, row in (("server, 1 client", single), (f"server, {load['clients']} clients", load)):
        lines.append(f"| {name} | {row['sent']} | {row['ok']} | {row['refused_503']} | {row['errors']} | "
                     f"{row['per_second']:.1f} | {_ms(row['p50'])} | {_ms(row['p95'])} | {_ms(row['p99'])} |")
    lines += [
        "",
        f"overhead, one client: median latency {single['p50'] / direct['p50']:.2f}x direct "
        f"({single['p50'] - direct['p50']:+.1f} ms a request; direct p50 {direct['before']['p50']:.1f} ms "
        f"before the server ran, {direct['after']['p50']:.1f} after)",
        f"throughput under load: {load['per_second'] / direct['per_second']:.2f}x direct "
        f"({load['per_second']:.1f} against {direct['per_second']:.1f} photos/s)",
    ]
    if load["error_kinds"]:
        lines.append(f"errors: {load['error_kinds']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a saved model file")
    parser.add_argument("--data", type=Path, default=None, help="FER-2013, to add its faces to the photos")
    parser.add_argument("--photos", type=int, default=30, help="distinct photos sent in turn (default 30)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server workers (default: cores)")
    parser.add_argument("--queue", type=int, default=None,
                        help="server queue (default: clients - workers, so no client is refused)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--single", type=int, default=100, help="requests of the one-client run (default 100)")
    parser.add_argument("--time-cap", type=float, default=300.0, help="seconds the load may run (default 300)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the page here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    from fer_bench.faces import find_faces

    photos = make_photos(args.data, args.photos)
    import cv2

    faces = [len(find_faces(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR))) for p in photos]
    queue = args.queue if args.queue is not None else max(0, args.clients - args.workers)
    results = {"model": str(args.model), "photos": len(photos), "faces_per_photo": float(np.mean(faces)),
               "workers": args.workers, "queue": queue, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    print(f"direct: {len(photos)} photos ...", file=sys.stderr)
    model = load_direct(args.model, workers=args.workers)
    before = time_direct(model, photos)
    process, url = start_server(args.model, workers=args.workers, queue=queue)
    try:
        print(f"server at {url}: one client, {args.single} requests ...", file=sys.stderr)
        results["one_client"] = run_clients(url, photos, clients=1, requests=args.single, time_cap=args.time_cap)
        print(f"{args.clients} clients, up to {args.requests} requests or {args.time_cap:.0f} s ...", file=sys.stderr)
        results["load"] = run_clients(url, photos, clients=args.clients, requests=args.requests,
                                      time_cap=args.time_cap)
        if args.screenshot is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as folder:
                screenshot(url, screenshot_photo(Path(folder)), args.screenshot)
            print(f"screenshot: {args.screenshot} ({args.screenshot.stat().st_size / 1024:.0f} KB)", file=sys.stderr)
    finally:
        process.terminate()
        process.wait(60)
    print(f"direct again: {len(photos)} photos ...", file=sys.stderr)
    results["direct"] = merge_direct(before, time_direct(model, photos))
    print(format_report(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
