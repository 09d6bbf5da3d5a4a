"""The dashboard in headless Chromium (Selenium) against `robustlab up` on loopback.

Needs Debian's chromium and chromedriver (`apt-get install -y chromium chromium-driver`); skipped
with that command as the reason when either is missing. Selenium Manager is never asked for
anything: the driver path is given explicitly and SE_OFFLINE is set, so nothing is downloaded.

Screenshots go to $ROBUSTLAB_SCREENSHOTS (else a temporary directory); with
ROBUSTLAB_UPDATE_DOCS_SCREENSHOTS=1 the ones the user guide shows are copied to docs/img/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from robustlab.embedded_redis import free_port
from service.client import RobustlabClient
from service.schemas import EXAMPLE_SPEC

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
DOC_SHOTS = {"signin-refused", "jobs", "job-report", "spec-error", "phone-jobs", "phone-report", "report-12-phone",
             "report-12-laptop", "api-docs", "upload-onnx", "evaluate-report-phone", "evaluate-report-laptop"}
LAPTOP, PHONE = (1366, 900), (390, 844)

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"headless Chromium not installed ({CHROMIUM} or {CHROMEDRIVER} missing): run `{INSTALL}`",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@dataclass
class Up:
    url: str
    key: str
    process: subprocess.Popen[bytes]
    log: Path



@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`robustlab up` with one worker; every process of its tree is killed at the end."""
    tmp = tmp_path_factory.mktemp("dashboard")
    port, log = free_port(), tmp / "up.log"
    prefix = f"rltest:dash{port}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBUSTLAB_")}
    env.update(ROBUSTLAB_KEY_PREFIX=prefix, ROBUSTLAB_QUEUE=prefix.strip(":").replace(":", "-"),
               ROBUSTLAB_DEVICE="cpu", OMP_NUM_THREADS="1")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "robustlab.cli", "up", "--port", str(port), "--workers", "1",
             "--data-dir", str(tmp / "data"), "--grace", "3"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    seen: set[psutil.Process] = set()
    try:
        deadline = time.monotonic() + 60
        while "robustlab is up" not in log.read_text(errors="replace"):
            assert process.poll() is None, f"`robustlab up` exited:\n{log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"`robustlab up` not ready:\n{log.read_text(errors='replace')}"
            time.sleep(0.2)
        key = (tmp / "data" / "api-keys").read_text().strip().split(":", 1)[1]
        seen.update(psutil.Process(process.pid).children(recursive=True))
        yield Up(f"http://127.0.0.1:{port}", key, process, log)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            seen.update(psutil.Process(process.pid).children(recursive=True))
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for child in seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = Path(os.environ.get("ROBUSTLAB_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    if os.environ.get("ROBUSTLAB_UPDATE_DOCS_SCREENSHOTS") == "1":
        for name in DOC_SHOTS:
            if (folder / f"{name}.png").exists():
                shutil.copyfile(folder / f"{name}.png", REPO / "docs" / "img" / f"dashboard-{name}.png")


@pytest.fixture(scope="module")
def browser(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch_module.setenv("SE_OFFLINE", "true")  # Selenium Manager must not go online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _wait(driver: Any, condition: Any, what: str, timeout: float = 15) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message=f"waiting for {what}")


def _css(driver: Any, selector: str, timeout: float = 15) -> Any:
    return _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, selector), selector, timeout)


def _shot(driver: Any, folder: Path, name: str, height: int | None = None) -> None:
    """The window as a PNG; `height` makes the window that tall for this one shot."""
    if height:
        driver.set_window_size(1280, height)
        driver.execute_script("window.scrollTo(0, 0)")
    try:
        driver.save_screenshot(str(folder / f"{name}.png"))
    finally:
        if height:
            driver.set_window_size(1280, 900)


def _sign_in(driver: Any, up: Up) -> None:
    driver.get(f"{up.url}/#/signin")
    driver.execute_script("sessionStorage.setItem('robustlab.apiKey', arguments[0])", up.key)
    driver.get(f"{up.url}/#/jobs")
    _css(driver, "#job-list")


def _set_editor(driver: Any, text: str) -> None:
    driver.execute_script("const t = document.getElementById('spec-editor'); t.value = arguments[0];"
                          "t.dispatchEvent(new Event('input', {bubbles: true}));", text)


def _overflow(driver: Any) -> int:
    return int(driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth"))


def test_a_wrong_key_is_refused_and_the_right_one_signs_in(browser: Any, up: Up, shots: Path) -> None:
    browser.get(up.url + "/")
    key_field = _css(browser, "#api-key")  # not signed in: the router sends us to sign-in
    assert browser.current_url.endswith("#/signin")
    key_field.send_keys("not-the-key-0123456789")
    browser.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    refused = _wait(browser, lambda d: "refused" in d.find_element(By.ID, "signin-message").text and
                    d.find_element(By.ID, "signin-message"), "the refusal")
    assert "wrong API key" in refused.text
    assert browser.execute_script("return sessionStorage.getItem('robustlab.apiKey')") is None
    assert browser.current_url.endswith("#/signin")
    _shot(browser, shots, "signin-refused")

    key_field.clear()
    key_field.send_keys(up.key)
    browser.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    _css(browser, "#job-list")
    assert browser.current_url.endswith("#/jobs")
    assert browser.execute_script("return localStorage.getItem('robustlab.apiKey')") is None  # not remembered
    assert up.key not in browser.current_url
    browser.find_element(By.ID, "sign-out").click()
    _css(browser, "#api-key")
    assert browser.execute_script("return sessionStorage.getItem('robustlab.apiKey')") is None


def test_a_bad_spec_shows_its_error_at_the_line_and_the_picker_adds_a_regularizer(
        browser: Any, up: Up, shots: Path) -> None:
    _sign_in(browser, up)
    browser.get(f"{up.url}/#/submit")
    _css(browser, "#load-example").click()
    _wait(browser, lambda d: "Valid" in d.find_element(By.ID, "spec-status").text, "the example to validate")
    example = browser.find_element(By.ID, "spec-editor").get_attribute("value")
    line = next(n for n, text in enumerate(example.splitlines(), 1) if "kind: double_backprop" in text)
    _set_editor(browser, example.replace("kind: double_backprop", "kind: double_backprp"))

    problem = _css(browser, '#spec-problems li[data-path="regularizers[1].kind"]')
    assert problem.get_attribute("data-line") == str(line)
    assert "did you mean 'double_backprop'" in problem.text and f"line {line}" in problem.text
    marked = browser.find_element(By.CSS_SELECTOR, f'.gutter span[data-line="{line}"]')
    assert "bad" in marked.get_attribute("class") and "double_backprop" in marked.get_attribute("title")
    assert browser.find_elements(By.CSS_SELECTOR, f'.mark[data-line="{line}"]')
    assert len(browser.find_elements(By.CSS_SELECTOR, ".gutter span.bad")) == 1
    assert browser.find_element(By.ID, "spec-editor").get_attribute("aria-invalid") == "true"
    _shot(browser, shots, "spec-error")
    browser.find_element(By.ID, "submit-job").click()  # refused in the browser: the spec is invalid
    time.sleep(0.3)
    assert browser.current_url.endswith("#/submit")

    _set_editor(browser, example)
    _wait(browser, lambda d: "Valid" in d.find_element(By.ID, "spec-status").text, "the fixed spec to validate")
    picker = _css(browser, "#regularizer-pick")
    browser.execute_script("arguments[0].value = 'jacobian'; arguments[0].dispatchEvent(new Event('change'))",
                           picker)
    browser.find_element(By.ID, "add-regularizer").click()
    _wait(browser, lambda d: "3 regularizers" in d.find_element(By.ID, "spec-status").text, "the added regularizer")
    assert 'kind: "jacobian"' in browser.find_element(By.ID, "spec-editor").get_attribute("value")


def test_a_submitted_job_goes_live_to_its_report(browser: Any, up: Up, shots: Path, tmp_path: Path) -> None:
    _sign_in(browser, up)
    browser.get(f"{up.url}/#/submit")
    _css(browser, "#load-example").click()
    _wait(browser, lambda d: "Valid" in d.find_element(By.ID, "spec-status").text, "the example to validate")
    browser.find_element(By.ID, "submit-job").click()
    _wait(browser, lambda d: re.search(r"#/jobs/[0-9a-f-]{36}$", d.current_url), "the job page")
    job_id = browser.current_url.rsplit("/", 1)[1]

    # The list, live: the row goes from queued/running to succeeded without a reload.
    browser.get(f"{up.url}/#/jobs")
    row = f'.job-row[data-id="{job_id}"]'
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the row is redrawn between the two reads
            state = (browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-status"),
                     browser.find_element(By.CSS_SELECTOR, f"{row} [role=progressbar]").get_attribute("aria-valuenow"))
            if not seen or seen[-1] != state:
                seen.append(state)
                if state[0] == "running":  # the last one, the furthest along, stays
                    _shot(browser, shots, "jobs")
            if state[0] in ("succeeded", "failed", "cancelled"):
                break
        time.sleep(0.1)
    assert seen and seen[-1] == ("succeeded", "100"), (seen, up.log.read_text(errors="replace")[-3000:])
    assert any(status in ("queued", "running") for status, _ in seen), seen  # it was watched, not just found
    if not (shots / "jobs.png").exists():
        _shot(browser, shots, "jobs")

    browser.find_element(By.CSS_SELECTOR, f"{row} a.job-link").click()
    _css(browser, "#job-summary .status-succeeded")
    frame = _css(browser, "#report-frame", timeout=20)
    assert frame.get_attribute("sandbox") == "allow-same-origin"  # no scripts in the report
    artifacts = _css(browser, "#artifacts").text
    assert "report.json" in artifacts and "results.csv" in artifacts
    browser.switch_to.frame(frame)
    try:
        rows = _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table#comparison tr.regularizer-row"),
                     "the comparison table")
        assert sorted(r.find_element(By.CSS_SELECTOR, "td").text.split()[0] for r in rows) == ["doubleback", "erm"]
        assert browser.find_elements(By.CSS_SELECTOR, "svg.robustness-curve")
        assert browser.find_elements(By.CSS_SELECTOR, ".badge")
    finally:
        browser.switch_to.default_content()
    _wait(browser, lambda d: int(d.find_element(By.ID, "report-frame").size["height"]) > 600, "the frame to fit")
    _shot(browser, shots, "job-report", height=1500)

    # A download goes through fetch with the key, not a link with the key in it.
    text = browser.execute_async_script(
        "const done = arguments[1]; import('/dashboard/api.js').then((api) => api.request(arguments[0], {json: false}))"
        ".then((r) => r.text()).then(done, (e) => done('ERROR ' + e.message))", f"/v1/jobs/{job_id}/report")
    assert '"summary"' in text

    # Upload one of its checkpoints through the form; then a file that is no checkpoint.
    checkpoint = tmp_path / "erm-seed0.safetensors"
    with RobustlabClient(up.url, up.key) as client:
        client.download(job_id, "checkpoints/erm-seed0.safetensors", checkpoint)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint at all")
    browser.get(f"{up.url}/#/submit")
    _css(browser, "#ckpt-arch option[value=mlp]")
    browser.find_element(By.ID, "ckpt-params").send_keys('{"hidden": [16]}')
    browser.find_element(By.ID, "model-input-shape").send_keys("1, 8, 8")  # what a .pt state_dict does not say
    browser.find_element(By.ID, "model-classes").send_keys("10")
    for path, expected in ((checkpoint, "Checkpoint accepted"), (tmp_path / "broken.pt", "NOT executed")):
        browser.find_element(By.ID, "ckpt-file").send_keys(str(path))
        browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
        result = _wait(browser, lambda d, e=expected: e in d.find_element(By.ID, "upload-result").text and
                       "Uploading" not in d.find_element(By.ID, "upload-result").text and
                       d.find_element(By.ID, "upload-result"), "the upload's answer", timeout=30)
        if path == checkpoint:
            assert re.fullmatch(r"[0-9a-f-]{36}", result.find_element(By.ID, "ckpt-id").text)
        else:
            alert = result.find_element(By.CSS_SELECTOR, "[role=alert]")  # the server's words, and no id
            assert "weights_only=True" in alert.text and not result.find_elements(By.ID, "ckpt-id")


def _tiny_onnx_and_npz(folder: Path) -> tuple[Path, Path]:
    """A small custom CNN (not a registry architecture) exported to ONNX, and 60 digits as an .npz."""
    import warnings

    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10)).eval()
    model = folder / "own-cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(model), dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    data = folder / "digits-60.npz"
    np.savez(data, x_test=x[:60], y_test=digits.target[:60].astype(np.int64))
    return model, data


def test_an_onnx_upload_and_a_dataset_upload_lead_to_an_evaluate_job(
        browser: Any, up: Up, shots: Path, tmp_path: Path) -> None:
    model, data = _tiny_onnx_and_npz(tmp_path)
    _sign_in(browser, up)
    browser.get(f"{up.url}/#/submit")
    _css(browser, "#load-example").click()
    _wait(browser, lambda d: "Valid" in d.find_element(By.ID, "spec-status").text, "the example to validate")

    fmt = _css(browser, "#model-format")
    assert not browser.find_element(By.ID, "ckpt-arch-field").get_attribute("hidden")  # registry by default
    browser.execute_script("arguments[0].value = 'onnx'; arguments[0].dispatchEvent(new Event('change'))", fmt)
    assert browser.find_element(By.ID, "ckpt-arch-field").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "model-name-field").get_attribute("hidden") is not None  # onnx: no name
    assert browser.find_element(By.ID, "ckpt-file").get_attribute("accept") == ".onnx"
    browser.find_element(By.ID, "ckpt-file").send_keys(str(model))
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    message = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#upload-result [role=alert]"),
                    "the missing fields to be named")
    assert "Input shape" in message.text  # said in the browser, before anything is sent
    browser.find_element(By.ID, "model-input-shape").send_keys("1, 8, 8")
    browser.find_element(By.ID, "model-classes").send_keys("10")
    browser.find_element(By.CSS_SELECTOR, "#upload button[type=submit]").click()
    result = _wait(browser, lambda d: "Model accepted" in d.find_element(By.ID, "upload-result").text and
                   d.find_element(By.ID, "upload-result"), "the upload's answer", timeout=60)
    model_id = result.find_element(By.ID, "ckpt-id").text
    assert re.fullmatch(r"[0-9a-f-]{36}", model_id) and result.find_element(By.ID, "ckpt-format").text == "onnx"
    browser.set_window_size(1280, 1500)  # the whole upload card, its answer included
    try:
        browser.execute_script("document.getElementById('upload').scrollIntoView()")
        browser.save_screenshot(str(shots / "upload-onnx.png"))
    finally:
        browser.set_window_size(1280, 900)
    browser.find_element(By.ID, "evaluate-upload").click()
    spec_text = browser.find_element(By.ID, "spec-editor").get_attribute("value")
    assert 'format: "onnx"' in spec_text and "input_shape: [1, 8, 8]" in spec_text and "architecture" not in spec_text
    assert browser.find_element(By.ID, "job-kind").get_attribute("value") == "evaluate"
    assert browser.find_element(By.ID, "checkpoint-id").get_attribute("value") == model_id

    browser.find_element(By.ID, "dataset-file").send_keys(str(data))
    browser.find_element(By.CSS_SELECTOR, "#dataset-upload button[type=submit]").click()
    uploaded = _wait(browser, lambda d: "Dataset accepted" in d.find_element(By.ID, "dataset-result").text and
                     d.find_element(By.ID, "dataset-result"), "the dataset upload's answer", timeout=60)
    dataset_id = uploaded.find_element(By.ID, "dataset-id").text
    assert "60 test" in uploaded.text
    browser.find_element(By.ID, "use-dataset").click()
    assert f'id: "{dataset_id}"' in browser.find_element(By.ID, "spec-editor").get_attribute("value")
    _wait(browser, lambda d: "onnx model" in d.find_element(By.ID, "spec-status").text and
          "uploaded dataset" in d.find_element(By.ID, "spec-status").text, "the spec to validate with both uploads")

    browser.find_element(By.ID, "submit-job").click()
    _wait(browser, lambda d: re.search(r"#/jobs/[0-9a-f-]{36}$", d.current_url), "the job page")
    job_id = browser.current_url.rsplit("/", 1)[1]
    _css(browser, "#job-summary .status-succeeded", timeout=180)
    with RobustlabClient(up.url, up.key) as client:
        job = client.job(job_id)
        report = client.report(job_id)
    assert job["kind"] == "evaluate" and job["spec"]["model"]["format"] == "onnx", job
    assert report["kind"] == "evaluate" and report["runs"][0]["samples"] == 60


def test_the_job_list_fits_a_phone(browser: Any, up: Up, shots: Path) -> None:
    with RobustlabClient(up.url, up.key) as client:
        if not client.list_jobs(limit=1)["items"]:
            client.submit(EXAMPLE_SPEC)  # run alone: give the list a row
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    try:
        _sign_in(browser, up)
        _css(browser, ".job-row")
        assert browser.execute_script("return window.innerWidth") == 390
        assert _overflow(browser) <= 0, "the job list scrolls sideways on a phone"
        _shot(browser, shots, "phone-jobs")
        browser.find_element(By.CSS_SELECTOR, ".job-row a.job-link").click()
        _css(browser, "#job-summary")
        assert _overflow(browser) <= 0, "the job page scrolls sideways on a phone"
        browser.get(f"{up.url}/#/submit")
        _css(browser, "#spec-editor")
        assert _overflow(browser) <= 0, "the submit page scrolls sideways on a phone"
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})



# --- the report page: the headline on screen without scrolling, on a laptop and a phone -------------


def _window(driver: Any, size: tuple[int, int]) -> None:
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


# The rectangle of every headline number (rows of #headline-table) in the top window's coordinates,
# also when the report sits in the dashboard's frame; and the window's size.
_HEADLINE_BOX = """
const frame = document.getElementById('report-frame');
const doc = frame ? frame.contentDocument : document;
const offset = frame ? frame.getBoundingClientRect() : {top: 0, left: 0};
const cells = [...doc.querySelectorAll('#headline-table tbody td')];
const boxes = cells.map((c) => c.getBoundingClientRect());
return {rows: doc.querySelectorAll('#headline-table tr.headline-row').length, cells: cells.length,
        right: Math.max(...boxes.map((b) => b.right)) + offset.left,
        bottom: Math.max(...boxes.map((b) => b.bottom)) + offset.top,
        width: window.innerWidth, height: window.innerHeight,
        texts: cells.map((c) => c.textContent.trim())};
"""


def _headline_on_screen(driver: Any, rows: int) -> dict[str, Any]:
    box: dict[str, Any] = driver.execute_script(_HEADLINE_BOX)
    assert box["rows"] == rows, box
    assert box["right"] <= box["width"] and box["bottom"] <= box["height"], (
        f"headline numbers off screen: they reach ({box['right']:.0f}, {box['bottom']:.0f}) in a "
        f"{box['width']}x{box['height']} window")
    assert all(text for text in box["texts"]), box["texts"]  # every cell has a number (or a marked —)
    return box


def test_the_report_headline_is_on_screen_without_scrolling(browser: Any, up: Up, shots: Path) -> None:
    """A finished job's page: clean accuracy, worst case per radius and trust, visible as it opens."""
    with RobustlabClient(up.url, up.key) as client:
        job = client.submit(EXAMPLE_SPEC)
        assert client.wait(job["id"], timeout=120)["status"] == "succeeded", up.log.read_text(errors="replace")
    try:
        for size, name in ((LAPTOP, "laptop-report"), (PHONE, "phone-report")):
            _window(browser, size)
            _sign_in(browser, up)
            browser.get(f"{up.url}/#/jobs/{job['id']}")
            _css(browser, "#job-summary .status-succeeded")
            frame = _css(browser, "#report-frame", timeout=30)
            _wait(browser, lambda d, f=frame: int(f.size["height"]) > 300, "the report to load")
            box = _headline_on_screen(browser, rows=2)
            assert _overflow(browser) <= 0, f"the job page scrolls sideways at {size}"
            assert "✓" in box["texts"]  # the trust column
            _shot(browser, shots, name)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_dozen_regularizers_keep_the_headline_on_screen(browser: Any, shots: Path, tmp_path: Path) -> None:
    """The README demo's shape (12 regularizers × 3 seeds, 4 L∞ and 3 L2 radii) as report.html."""
    from reports.render import render_html
    from tests.report_fixtures import demo_report

    page = tmp_path / "report.html"
    page.write_text(render_html(demo_report()), encoding="utf-8")
    try:
        for size, name in ((LAPTOP, "report-12-laptop"), (PHONE, "report-12-phone")):
            _window(browser, size)
            browser.get(page.as_uri())
            _css(browser, "#headline-table")
            box = _headline_on_screen(browser, rows=12)
            assert "0.2" in browser.find_element(By.ID, "headline").text  # radii as the spec wrote them
            assert "/255" not in browser.find_element(By.ID, "headline").text
            assert _overflow(browser) <= 0, f"report.html scrolls sideways at {size}"
            assert box["cells"] == 12 * (3 + 7)
            # Chart text as rendered (viewBox scaling included): legible on a phone too, not ~7 px.
            for chart in ("svg.robustness-panel", "svg.sensitivity-chart", "svg.cost-chart"):
                px = browser.execute_script(
                    "const s = document.querySelector(arguments[0]); return s.getBoundingClientRect().width"
                    " / s.viewBox.baseVal.width * parseFloat(s.getAttribute('font-size'))", chart)
                assert px >= 9.5, f"{chart} text is {px:.1f} px at {size}"
            _shot(browser, shots, name)
        # Columns the reader chooses, without script: unticking L2 hides its columns in the comparison.
        _window(browser, LAPTOP)
        browser.get(page.as_uri())
        l2 = browser.find_elements(By.CSS_SELECTOR, "#comparison td.c-l2")
        assert l2 and all(c.is_displayed() for c in l2)
        browser.find_element(By.CSS_SELECTOR, "label[for=show-l2]").click()
        assert not any(c.is_displayed() for c in browser.find_elements(By.CSS_SELECTOR, "#comparison td.c-l2"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_api_docs_render_offline(browser: Any, up: Up, shots: Path) -> None:
    """Swagger UI and ReDoc come from the service itself: every file they load is on its origin."""
    browser.get(f"{up.url}/docs")
    title = _css(browser, ".swagger-ui .info .title", timeout=30)
    assert "robustlab" in title.text
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock")) >= 5, "the operations")
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(url.startswith(up.url) for url in loaded), loaded
    _shot(browser, shots, "api-docs")
    browser.get(f"{up.url}/redoc")
    _wait(browser, lambda d: "robustlab" in d.find_element(By.TAG_NAME, "body").text and
          d.find_elements(By.CSS_SELECTOR, "[role=menuitem], li[data-item-id]"), "ReDoc's menu", timeout=30)
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert loaded and all(url.startswith(up.url) for url in loaded), loaded


# --- the job page's units timeline ---------------------------------------------------------------------

# Wraps fetch before the dashboard's modules load: the answer of GET /v1/jobs/<target> (a real job of
# the real server) gets the units set here. Devtools scripts are not subject to the page's CSP.
_ADD_UNITS = """
(() => {
  const original = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await original(input, init);
    const url = typeof input === 'string' ? input : input.url;
    const fake = JSON.parse(sessionStorage.getItem('test.units') || 'null');
    if (!fake || response.status !== 200 || !new URL(url, location.href).pathname.endsWith('/v1/jobs/' + fake.id)) {
      return response;
    }
    const job = await response.json();
    job.units = fake.units;
    return new Response(JSON.stringify(job), {status: 200, headers: response.headers});
  };
})();
"""


def _units_fixture(started: datetime) -> list[dict[str, Any]]:
    """Six units on three workers: finished, retried, failed, running (up to now) and one not started."""
    at = lambda s: (started + timedelta(seconds=s)).isoformat()  # noqa: E731
    unit = lambda name, kind, status, worker, start, end, attempts=1: {  # noqa: E731
        "name": name, "kind": kind, "status": status, "worker": worker, "started_at": at(start) if start is not None
        else None, "finished_at": at(end) if end is not None else None, "attempts": attempts}
    return [
        unit("train erm seed 0", "train", "succeeded", "gpu-host-1.gpu0", 0, 40),
        unit("train doubleback seed 0", "train", "succeeded", "gpu-host-2.gpu0", 2, 55, attempts=2),
        unit("evaluate erm seed 0 [0, 500)", "evaluate", "succeeded", "gpu-host-1.gpu0", 41, 70),
        unit("evaluate erm seed 0 [500, 1000)", "evaluate", "failed", "cpu-host.w1", 42, 60, attempts=3),
        unit("evaluate doubleback seed 0 [0, 500)", "evaluate", "running", "gpu-host-2.gpu0", 56, None),
        unit("evaluate doubleback seed 0 [500, 1000)", "evaluate", "queued", None, None, None, attempts=0),
    ]


_TIMELINE_GEOMETRY = """
const track = (bar) => bar.closest('.lane-track').getBoundingClientRect();
return {
  lanes: [...document.querySelectorAll('#units .lane')].map((l) => l.dataset.worker),
  laneNames: [...document.querySelectorAll('#units .lane-name')].map((n) => n.getBoundingClientRect().width),
  bars: [...document.querySelectorAll('#units .unit')].map((b) => {
    const r = b.getBoundingClientRect(), t = track(b);
    return {name: b.dataset.name, status: b.dataset.status, worker: b.closest('.lane').dataset.worker,
            title: b.title, left: r.left, right: r.right, width: r.width, trackLeft: t.left, trackRight: t.right,
            font: parseFloat(getComputedStyle(b).fontSize), colour: getComputedStyle(b).backgroundColor,
            labelShown: b.scrollWidth <= b.clientWidth + 1};
  }),
  waiting: [...document.querySelectorAll('#units .unit-chip')].map((c) => c.dataset.name),
  summary: document.getElementById('units-summary').textContent,
  afterReport: !!(document.getElementById('results').compareDocumentPosition(document.getElementById('units'))
                  & Node.DOCUMENT_POSITION_FOLLOWING),
};
"""


def test_the_units_timeline_shows_each_worker_and_unit_at_phone_and_laptop_width(
        browser: Any, up: Up, shots: Path) -> None:
    """A real job's page with units (set on the real answer, until every job has units of its own): a
    lane per worker, bars in start order, coloured by status, tooltips with attempts, no sideways scroll."""
    with RobustlabClient(up.url, up.key) as client:
        done = client.list_jobs(status="succeeded", limit=1)["items"]  # any finished job of the module will do
        job = done[0] if done else client.wait(client.submit(EXAMPLE_SPEC)["id"], timeout=180)
        assert job["status"] == "succeeded", up.log.read_text(errors="replace")[-3000:]
    units = _units_fixture(datetime.now(UTC) - timedelta(seconds=90))
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _ADD_UNITS})
    try:
        for size, name in ((PHONE, "units-timeline-phone"), ((1280, 900), "units-timeline-laptop")):
            _window(browser, size)
            _sign_in(browser, up)
            browser.execute_script("sessionStorage.setItem('test.units', arguments[0])",
                                   json.dumps({"id": job["id"], "units": units}))
            # A new document (a hash change alone would keep the page, and its fetch, as they were).
            browser.get(f"{up.url}/?timeline={size[0]}#/jobs/{job['id']}")
            _css(browser, "#job-summary .status-succeeded")
            _css(browser, "#units .unit")
            _css(browser, "#report-frame", timeout=30)
            geometry = browser.execute_script(_TIMELINE_GEOMETRY)
            assert geometry["afterReport"], "a finished job's report comes before its units"
            assert geometry["lanes"] == ["gpu-host-1.gpu0", "gpu-host-2.gpu0", "cpu-host.w1", ""], geometry["lanes"]
            assert all(width >= 60 for width in geometry["laneNames"][:3]), geometry["laneNames"]
            assert geometry["waiting"] == ["evaluate doubleback seed 0 [500, 1000)"]
            assert geometry["summary"].startswith("6 units (1 running, 1 queued, 3 succeeded, 1 failed) on 3 workers")
            bars = {bar["name"]: bar for bar in geometry["bars"]}
            assert set(bars) == {u["name"] for u in units if u["status"] != "queued"}
            for unit in units:
                if unit["status"] == "queued":
                    continue
                bar = bars[unit["name"]]
                assert bar["status"] == unit["status"] and bar["worker"] == unit["worker"]
                assert f"{unit['attempts']} attempt" in bar["title"] and unit["kind"] in bar["title"]
                assert bar["trackLeft"] - 1 <= bar["left"] and bar["right"] <= bar["trackRight"] + 1, (size, bar)
                assert bar["font"] >= 11, f"unit labels are {bar['font']} px at {size}"
            assert "2 attempts" in bars["train doubleback seed 0"]["title"]
            # One time axis for every lane: later starts sit further right; the running unit reaches now.
            starts = ["train erm seed 0", "train doubleback seed 0", "evaluate erm seed 0 [0, 500)",
                      "evaluate erm seed 0 [500, 1000)", "evaluate doubleback seed 0 [0, 500)"]
            offsets = [bars[n]["left"] - bars[n]["trackLeft"] for n in starts]
            assert offsets == sorted(offsets) and offsets[0] <= 1, offsets
            assert bars["evaluate doubleback seed 0 [0, 500)"]["right"] >= bars["train erm seed 0"]["trackRight"] - 2
            ratio = bars["train erm seed 0"]["width"] / bars["evaluate erm seed 0 [0, 500)"]["width"]
            assert abs(ratio - 40 / 29) < 0.1, ratio  # bar lengths are durations on one scale
            colours = {bars[n]["colour"] for n in ("train erm seed 0", "evaluate erm seed 0 [500, 1000)")}
            assert len(colours) == 2, "succeeded and failed look alike"
            if size == (1280, 900):
                assert bars["train erm seed 0"]["labelShown"], "a 40 s bar on a laptop should show its name"
            assert _overflow(browser) <= 0, f"the job page scrolls sideways at {size}"
            # The same units as a table, for exact times and screen readers.
            browser.find_element(By.CSS_SELECTOR, "#units details.unit-table summary").click()
            rows = browser.find_elements(By.CSS_SELECTOR, "#units .unit-table tbody tr")
            assert [r.find_element(By.CSS_SELECTOR, "td").text for r in rows] == [u["name"] for u in units]
            assert _overflow(browser) <= 0, f"the units table scrolls the page sideways at {size}"
            browser.execute_script("document.getElementById('units').scrollIntoView()")
            browser.save_screenshot(str(shots / f"{name}.png"))
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
        browser.execute_script("sessionStorage.removeItem('test.units')")
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_real_job_shows_its_own_units_on_the_timeline(browser: Any, up: Up) -> None:
    """When the server splits a job into units, the page draws exactly the units the API lists."""
    with RobustlabClient(up.url, up.key) as client:
        job = client.submit(EXAMPLE_SPEC)
        job = client.wait(job["id"], timeout=180)
    assert job["status"] == "succeeded", up.log.read_text(errors="replace")[-3000:]
    if not job.get("units"):
        pytest.skip("this server runs jobs in one piece (no units yet)")
    _sign_in(browser, up)
    browser.get(f"{up.url}/#/jobs/{job['id']}")
    _css(browser, "#job-summary .status-succeeded")
    _css(browser, "#units .unit")
    drawn = browser.execute_script(
        "return [...document.querySelectorAll('#units .unit')].map((b) => [b.dataset.name, b.dataset.status,"
        " b.closest('.lane').dataset.worker, b.dataset.attempts])")
    expected = [[u["name"], u["status"], u["worker"], str(u["attempts"])] for u in job["units"] if u["started_at"]]
    assert sorted(drawn) == sorted(expected)
    assert all(u["status"] == "succeeded" for u in job["units"])


# --- an evaluate job's report: one model, at phone and laptop width --------------------------------


_CLIPPED = """
for (const d of document.querySelectorAll('details')) d.open = true;
return [...document.querySelectorAll('.table-scroll')].filter((s) => s.scrollWidth > s.clientWidth + 1)
  .map((s) => `${s.querySelector('table').id}: ${s.scrollWidth} > ${s.clientWidth}`);
"""


def test_an_evaluate_report_fits_a_phone_and_a_laptop(browser: Any, shots: Path, tmp_path: Path) -> None:
    """The report of one model (issue 22.5): its verdict on screen as the page opens, and no table, at
    390 px or at 1280 px, wider than the page (every column readable without sideways scrolling)."""
    from reports.render import render_html
    from tests.report_fixtures import evaluate_fixture

    page = tmp_path / "report.html"
    page.write_text(render_html(evaluate_fixture()), encoding="utf-8")
    try:
        for size, name in (((1280, 900), "evaluate-report-laptop"), (PHONE, "evaluate-report-phone")):
            _window(browser, size)
            browser.get(page.as_uri())
            verdict = _css(browser, "#evaluation-headline")
            assert "90.0 %" in verdict.text and "95 % interval 87.0–92.5" in verdict.text
            bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", verdict)
            assert bottom <= size[1], f"the verdict ends at {bottom:.0f} px in a {size} window"
            _shot(browser, shots, name)
            assert _overflow(browser) <= 0, f"the evaluate report scrolls sideways at {size}"
            assert browser.execute_script(_CLIPPED) == [], f"a table is wider than the page at {size}"
            assert _overflow(browser) <= 0, f"the open details scroll sideways at {size}"
            rows = browser.find_elements(By.CSS_SELECTOR, "#robust-accuracy td")
            assert all(c.size["width"] > 0 for c in rows) and any("56.0–64.0" in c.text for c in rows)
            assert browser.find_element(By.ID, "outcomes-download").is_displayed()
            assert len(browser.find_elements(By.CSS_SELECTOR, "svg.robustness-curve")) == 2
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
