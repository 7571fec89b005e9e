"""``fer-bench serve``: every endpoint and refusal through Flask's test client, then the real server
(waitress, started by the CLI) under a small load and in headless Chromium with a fake camera."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")
pytest.importorskip("flask")
pytest.importorskip("waitress")

from fer_bench import predict as P  # noqa: E402
from fer_bench._core import FER2013_CLASSES  # noqa: E402
from fer_bench import serve as S  # noqa: E402
from fer_bench.cli import cli  # noqa: E402
from fer_classic.model import ClassicModel  # noqa: E402
from conftest import synthetic_faces  # noqa: E402
from test_predict import ASTRONAUT_CENTRE, HOPPER_CENTRE, astronaut, hopper, near  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny HOG + kNN model on synthetic faces: its labels are meaningless, its interface is real."""
    import fer_classic.model

    X, y = synthetic_faces(140, seed=1)
    suffix = getattr(fer_classic.model, "MODEL_SUFFIX", ".joblib")  # the format ClassicModel.save writes
    return ClassicModel("hog", "knn").fit(X, y).save(tmp_path_factory.mktemp("model") / f"tiny{suffix}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Real photos: two faces in one picture, one face in a small frame, and one without a face."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    pair = np.full((700, 1200, 3), 200, np.uint8)
    pair[50:562, 40:552] = astronaut()
    pair[60:660, 640:1152] = hopper()
    cv2.imwrite(str(root / "pair.png"), pair)
    cv2.imwrite(str(root / "small.jpg"), cv2.resize(hopper(), (256, 300), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(root / "coffee.jpg"), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="module")
def pool(model_path):
    pool = S.WorkerPool(model_path, workers=1)
    yield pool
    pool.close()


def make_client(pool, **limits):
    return S.create_app(pool, S.ServeLimits(**limits)).test_client()


@pytest.fixture(scope="module")
def client(pool):
    return make_client(pool)


def upload(client, path: Path, *, name=None, field="image"):
    with open(path, "rb") as handle:
        return client.post("/api/predict", data={field: (handle, name or path.name)},
                           content_type="multipart/form-data")


def predict_cli_records(path: Path, model_path, monkeypatch) -> list:
    """What ``fer-bench predict`` prints for ``path``, run from its folder so records name it as uploaded."""
    monkeypatch.chdir(path.parent)
    result = CliRunner().invoke(cli, ["predict", str(model_path), path.name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels, followed by a few bytes of image data.

    A decompression bomb looks like this up to its header; decoding it in
    full would fail on the short data, so a refusal that names the size shows
    the header was read and the pixels were not.
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- endpoints


def test_page_script_and_style_come_from_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<script src="/static/app.js">' in html and 'href="/static/style.css"' in html
    for name, mimetype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and response.mimetype == mimetype
        text = response.get_data(as_text=True)
        assert "getUserMedia" in text or ".face-box" in text
        # Nothing fetched from elsewhere: no absolute URL, no @import, no web font.
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert "@import" not in text and "@font-face" not in text
    assert "http://" not in html and "https://" not in html
    assert client.get("/static/../serve.py").status_code == 404
    assert client.get("/static/nothing.js").status_code == 404


def test_model_and_health(client):
    info = client.get("/api/model").get_json()
    assert info["name"] == "tiny" and info["family"] == "classic"
    assert info["classes"] == list(FER2013_CLASSES)
    assert (info["features"], info["classifier"]) == ("hog", "knn")
    assert info["scores"] is None  # this model was fitted by hand, not by the harness
    assert (info["workers"], info["queue"], info["max_upload"]) == (1, 8, 10_000_000)
    assert info["max_pixels"] == P.MAX_IMAGE_PIXELS and info["detector"] == "dlib-verified"
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"


def test_model_scores_recorded_by_the_harness_are_shown():
    from types import SimpleNamespace

    model = SimpleNamespace(family="classic", features="hog", classifier="knn", classes_=FER2013_CLASSES,
                            metadata={"scores": {"accuracy": 0.5238, "f1_macro": 0.5073}, "dataset": "fer2013",
                                      "trained": "2026-11-21T10:00:00"})
    info = S.describe_model(model, "hog__knn")
    assert info["scores"] == {"accuracy": 0.5238, "f1_macro": 0.5073}
    assert (info["dataset"], info["trained"]) == ("fer2013", "2026-11-21T10:00:00")


def test_two_faces_answer_the_records_of_fer_bench_predict(client, photos, model_path, monkeypatch):
    response = upload(client, photos / "pair.png")
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert (answer["width"], answer["height"]) == (1200, 700)
    left, right = answer["records"]
    assert near(left["box"], (ASTRONAUT_CENTRE[0] + 40, ASTRONAUT_CENTRE[1] + 50))
    assert near(right["box"], (HOPPER_CENTRE[0] + 640, HOPPER_CENTRE[1] + 60), 40)
    assert answer["records"] == predict_cli_records(photos / "pair.png", model_path, monkeypatch)
    assert list(left) == list(P.RECORD_FIELDS)  # predict's field order, too

    # The same bytes sent raw, with an image content type: the same records, the file called "upload".
    raw = client.post("/api/predict", data=(photos / "pair.png").read_bytes(), content_type="image/png")
    assert raw.status_code == 200
    assert raw.get_json()["records"] == [{**record, "file": "upload"} for record in answer["records"]]


def test_a_photo_without_a_face_says_so(client, photos):
    answer = upload(client, photos / "coffee.jpg").get_json()
    [record] = answer["records"]
    assert record["face"] is None and record["box"] is None and record["label"] is None
    assert record["reason"].startswith("no face found by dlib-verified")


# --------------------------------------------------------------------------- refusals


def test_upload_over_the_limit_is_413(pool, photos):
    client = make_client(pool, max_upload=50_000)
    photo = (photos / "pair.png").read_bytes()
    assert len(photo) > 50_000 + S.MULTIPART_MARGIN
    response = upload(client, photos / "pair.png")  # its Content-Length is over the limit
    assert response.status_code == 413
    assert "over the limit of 0.05 MB (50,000 bytes)" in response.get_json()["error"]
    # Over the image limit but within the multipart margin: refused once the bytes are read.
    response = client.post("/api/predict", data=photo[:50_001], content_type="image/png")
    assert response.status_code == 413
    assert response.get_json()["error"] == ("the image (50,001 bytes) is over the limit of 0.05 MB "
                                            "(50,000 bytes)")
    assert client.get("/api/model").get_json()["max_upload"] == 50_000


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"hello", "text/plain", 415, "content type 'text/plain' is not accepted"),
    (b"hello", None, 415, "no Content-Type"),
    (b"this is not a picture at all", "image/jpeg", 415, "upload: not an image (no JPEG, PNG"),
    (b"", "image/png", 400, "the image is empty (0 bytes)"),
    (png_header(64, 64), "image/png", 400, "upload: not an image OpenCV can decode (corrupt, truncated"),
])
def test_what_is_not_an_image_is_refused_with_a_reason(client, body, content_type, status, message):
    response = client.post("/api/predict", data=body, content_type=content_type)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert message in response.get_json()["error"]


def test_a_truncated_jpeg_upload_is_400(client, photos):
    data = (photos / "small.jpg").read_bytes()
    response = client.post("/api/predict", data=data[:200], content_type="image/jpeg")  # cut before its size
    assert response.status_code == 400
    assert response.get_json()["error"] == "upload: a truncated or corrupt JPEG (its header cannot be read)"


def test_a_jpeg_cut_after_its_header_is_400_as_predict_refuses_it(client, photos):
    data = (photos / "small.jpg").read_bytes()
    response = client.post("/api/predict", data=data[: len(data) // 2], content_type="image/jpeg")
    assert response.status_code == 400
    assert response.get_json()["error"] == "upload: truncated JPEG (it has no end-of-image marker)"


def test_a_form_without_the_image_field_is_400(client, photos):
    response = upload(client, photos / "small.jpg", field="photo")
    assert response.status_code == 400
    assert response.get_json()["error"] == "no file in the form field 'image' (fields sent: photo)"


@pytest.mark.parametrize("width, height, shown", [
    (13_000, 12_000, "13000x12000 = 156 megapixels; the limit is 150"),
    (100_000, 100_000, "more than 178 megapixels; the limit is 150"),
])
def test_decompression_bomb_is_refused_from_its_header(pool, width, height, shown, monkeypatch):
    sent = []
    monkeypatch.setattr(pool, "predict", lambda *args, **kwargs: sent.append(args))
    client = make_client(pool)
    response = client.post("/api/predict", data=png_header(width, height), content_type="image/png")
    assert response.status_code == 413
    assert response.get_json()["error"] == f"upload: image too large ({shown}); downscale it first"
    assert sent == []  # never handed to a worker to decode


def test_a_full_queue_answers_503_with_retry_after(pool, photos):
    """One worker and no queue: while a prediction runs, the next request is refused at once."""
    entered, release = threading.Event(), threading.Event()

    class HeldPool:
        info, options = pool.info, pool.options

        def predict(self, *args, **kwargs):
            entered.set()
            assert release.wait(30)
            return pool.predict(*args, **kwargs)

    app = S.create_app(HeldPool(), S.ServeLimits(workers=1, queue=0))
    first = {}
    worker = threading.Thread(target=lambda: first.update(response=upload(app.test_client(), photos / "small.jpg")))
    worker.start()
    assert entered.wait(30)
    refused = upload(app.test_client(), photos / "small.jpg")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert refused.get_json()["error"] == "busy: 1 prediction(s) running and 0 waiting; retry in 1 s"
    assert app.test_client().get("/healthz").get_json()["admitted"] == 1
    release.set()
    worker.join(60)
    assert first["response"].status_code == 200
    assert upload(app.test_client(), photos / "small.jpg").status_code == 200  # the slot is free again


# --------------------------------------------------------------------------- privacy


def test_uploads_are_never_written_to_disk(client, photos, monkeypatch):
    import tempfile

    import werkzeug.formparser

    written = []

    def refuse(*args, **kwargs):
        written.append(args)
        raise AssertionError("an upload went to a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", refuse)
    big = photos.parent / "big-upload.png"  # over Werkzeug's 500 KB in-memory threshold
    rng = np.random.default_rng(0)
    image = cv2.resize(hopper(), (1024, 1200))
    cv2.imwrite(str(big), np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    assert big.stat().st_size > 1_000_000
    response = upload(client, big)
    assert response.status_code == 200 and written == []


def test_the_log_holds_route_status_size_and_time_only(client, photos, caplog):
    caplog.set_level("INFO", logger="fer_bench.serve")
    upload(client, photos / "small.jpg", name="private-name-of-a-visitor.jpg")
    client.get("/no/such/path?secret=1")
    text = caplog.text
    size = (photos / "small.jpg").stat().st_size
    assert "POST /api/predict 200" in text and " ms" in text
    assert "GET (no route) 404" in text
    assert "private-name" not in text and "secret" not in text
    lines = [r.getMessage() for r in caplog.records if "/api/predict" in r.getMessage()]
    [line] = lines
    assert int(line.split()[3]) > size  # the multipart body's size


# --------------------------------------------------------------------------- the worker processes


def test_each_worker_loads_the_model_once_and_a_crashed_worker_is_replaced(model_path, photos):
    pool = S.WorkerPool(model_path, workers=2)
    try:
        data = (photos / "small.jpg").read_bytes()
        started = set(pool._executor._processes)
        assert len(started) == 2  # both loaded the model before the first request
        answers = [pool.predict(data, "small.jpg", max_pixels=P.MAX_IMAGE_PIXELS) for _ in range(4)]
        assert set(pool._executor._processes) == started  # the same processes, nothing reloaded
        assert all(answer == answers[0] for answer in answers)
        pool._executor.submit(os._exit, 1)  # a worker dies, as it would in a crash inside native code
        with pytest.raises(S.Refusal, match="restarted") as refusal:
            for _ in range(20):  # the pool notices the death within a moment
                pool.predict(data, "small.jpg", max_pixels=P.MAX_IMAGE_PIXELS)
                time.sleep(0.2)
        assert refusal.value.status == 500 and pool.restarts == 1
        assert pool.predict(data, "small.jpg", max_pixels=P.MAX_IMAGE_PIXELS) == answers[0]
    finally:
        pool.close()


def test_a_missing_model_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--model", str(tmp_path / "none.joblib"), "--port", "0"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"fer-bench: error: {tmp_path / 'none.joblib'}: no such model file")


def test_a_pickle_model_loads_only_when_trusted():
    """A joblib (pickle) model file can run code as it loads: refused unless --trust says it is trusted."""
    old = Path(__file__).parents[1] / "fixtures" / "old_layout_ls_svm.joblib"
    result = CliRunner().invoke(cli, ["serve", "--model", str(old), "--port", "0"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"fer-bench: error: {old}:") and "--trust" in line
    pool = S.WorkerPool(old, trust=True)
    try:
        assert pool.info["name"] == "old_layout_ls_svm" and pool.info["classifier"] == "ls_svm"
    finally:
        pool.close()


@pytest.mark.parametrize("text, size", [("10MB", 10_000_000), ("512KB", 512_000), ("2.5 mb", 2_500_000),
                                        ("800B", 800), ("3", 3_000_000), ("1GB", 1_000_000_000)])
def test_sizes(text, size):
    assert S.parse_size(text) == size


@pytest.mark.parametrize("text", ["ten", "-1MB", "0", "5TB"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        S.parse_size(text)


# --------------------------------------------------------------------------- the real server


def fer_bench_command() -> list:
    script = Path(sys.executable).with_name("fer-bench")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fer_bench.cli"]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    """``fer-bench serve`` on a free loopback port: one worker, two requests may wait."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([*fer_bench_command(), "serve", "--model", str(model_path), "--port", "0",
                                    "--workers", "1", "--queue", "2"],
                                   stdout=subprocess.PIPE, stderr=stderr, text=True)
    url = process.stdout.readline().strip()  # printed once the workers have loaded the model
    assert url.startswith("http://127.0.0.1:"), log.read_text()
    yield {"url": url, "log": log, "process": process}
    if process.poll() is None:
        process.terminate()
        process.wait(60)


def request(url, data=None, content_type=None, timeout=60):
    """(status, headers, JSON body) of one HTTP request, error statuses included."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read() or b"null")


def test_load_on_loopback(server, photos, pool):
    """4 clients x 40 answers from one worker with room for 3: only deliberate 503s, every answer exact.

    A refused client waits a moment and sends the same request again, as the
    page does (after Retry-After; here 50 ms, to keep the test short).
    """
    data = (photos / "small.jpg").read_bytes()
    expected = pool.predict(data, "upload", max_pixels=P.MAX_IMAGE_PIXELS)
    results, lock = [], threading.Lock()

    def client():
        answered = attempts = 0
        while answered < 40 and attempts < 1000:
            attempts += 1
            status, headers, body = request(server["url"] + "api/predict", data, "image/jpeg")
            with lock:
                results.append((status, headers.get("Retry-After"), body))
            if status == 503:
                time.sleep(0.05)
            else:
                answered += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    statuses = [status for status, *_ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) == 160
    for status, retry_after, body in results:
        if status == 200:
            assert body == expected
        else:
            assert retry_after == "1" and body["error"].startswith("busy:")
    status, _, body = request(server["url"] + "healthz")
    assert status == 200 and body["admitted"] == 0
    assert request(server["url"] + "api/predict", data, "image/jpeg")[2] == expected


def test_waitress_refuses_an_oversized_body_before_reading_it(server):
    """A Content-Length over the limit is answered 413 from the headers, while the body is still coming."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(server["url"])
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/predict")
        connection.putheader("Content-Type", "image/jpeg")
        connection.putheader("Content-Length", str(10_000_000 + S.MULTIPART_MARGIN + 1))
        connection.endheaders()
        connection.send(b"\xff\xd8\xff" + b"\0" * 10_000)  # a start; the rest never comes
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()
    assert request(server["url"] + "healthz")[0] == 200


# --------------------------------------------------------------------------- a real browser


def write_y4m(path: Path, frames) -> None:
    """Frames (BGR, even width and height) as a YUV4MPEG2 file, the format Chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())  # the Y, U and V planes


def camera_frames(n: int = 30) -> list:
    """640x480 frames of a real face (the astronaut's) gliding left to right over a gray background."""
    face = cv2.resize(astronaut()[30:230, 120:320], (200, 200), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(n):
        frame = np.full((480, 640, 3), 150, np.uint8)
        left = 20 + int(i * 400 / (n - 1))
        frame[140:340, left : left + 200] = face
        frames.append(frame)
    return frames


def chromium_driver(tmp_path: Path, y4m: Path):
    webdriver = pytest.importorskip("selenium.webdriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        if os.environ.get("FER_BENCH_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromedriver are required here (apt-get install chromium chromium-driver)")
        pytest.skip("chromium and chromedriver not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={y4m}", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)


def test_page_in_chromium_photo_then_fake_camera(server, photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    y4m = tmp_path / "faces.y4m"
    write_y4m(y4m, camera_frames())
    driver = chromium_driver(tmp_path, y4m)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server["url"])
        wait.until(lambda d: "Model tiny" in d.find_element(By.ID, "model").text)

        # A photo with two faces: two boxes where the API puts them, labelled as it labels them.
        expected = request(server["url"] + "api/predict", (photos / "pair.png").read_bytes(), "image/png")[2]
        driver.find_element(By.ID, "file").send_keys(str(photos / "pair.png"))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#overlay .face-box")) == 2)
        boxes = driver.find_elements(By.CSS_SELECTOR, "#overlay .face-box")
        photo = driver.find_element(By.ID, "photo").rect
        scale = photo["width"] / 1200
        for box, record in zip(boxes, expected["records"]):
            p = record["probabilities"][record["label"]]
            assert box.text.endswith(f"{record['label']} {p:.2f}")
            assert record["valence"] in box.get_attribute("class")
            x, y, w, h = record["box"]
            assert box.rect["x"] - photo["x"] == pytest.approx(x * scale, abs=2)
            assert box.rect["y"] - photo["y"] == pytest.approx(y * scale, abs=2)
            assert box.rect["width"] == pytest.approx(w * scale, abs=2)
        items = driver.find_elements(By.CSS_SELECTOR, "#faces li")
        assert [item.find_element(By.CLASS_NAME, "title").text for item in items] == [
            f"{r['label']} ({r['valence']})" for r in expected["records"]]
        assert len(items[0].find_elements(By.CSS_SELECTOR, ".bar")) == 7
        assert "2 face(s) in pair.png." in driver.find_element(By.ID, "status").text

        # The camera: the overlay follows the gliding face, updated at least 5 times.
        driver.find_element(By.ID, "camera-toggle").click()
        lefts = []

        def updated(d):
            # One script reads the count and the box together: the page redraws the overlay on every
            # answer, so an element found in one call may be gone by the next.
            updates, left = d.execute_script(
                "const overlay = document.getElementById('overlay');"
                "const box = overlay.querySelector('.face-box');"
                "return [parseInt(overlay.getAttribute('data-updates')), box ? parseFloat(box.style.left) : null];")
            if left is not None and updates > len(lefts):
                lefts.append(float(left))
            return updates >= 1 + 5 and len(lefts) >= 5  # 1: the photo's update

        wait.until(updated)
        assert driver.find_element(By.ID, "camera").get_attribute("hidden") is None
        assert "Camera:" in driver.find_element(By.ID, "status").text
        assert max(lefts) - min(lefts) > 5  # percent of the frame's width: the boxes moved with the face
        driver.find_element(By.ID, "camera-toggle").click()
        assert driver.find_element(By.ID, "camera-toggle").text == "Start camera"
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_server_stops_cleanly_on_sigterm(server):
    """Last in this file: SIGTERM stops the module's server, its workers with it, exit status 0."""
    process = server["process"]
    process.terminate()
    assert process.wait(60) == 0
    log = server["log"].read_text()
    assert "fer-bench: server stopped" in log
    # The browser uploaded pair.png by name; the log kept its size and time only.
    assert "POST /api/predict 200" in log and "pair.png" not in log
