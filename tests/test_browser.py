"""The editor notebook served by voila and driven by headless Debian chromium (playwright).

Skipped when chromium is missing, except under CI (HDAE_CI=1), where a missing browser is a failure.
"""
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import codes_matter

from hdae_core.widgets import RACE_S

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "07_editor.ipynb"
SCREENSHOT = ROOT / "reports" / "07_editor" / "browser_screenshot.png"
CHROMIUM = Path(os.environ.get("HDAE_CHROMIUM", "/usr/bin/chromium"))  # Debian's package
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
STARTUP_S = 120  # voila's port, then the kernel: start, import torch, build the editor
RENDER_S = 120
SETTLE_S = RACE_S + 1.0  # a late slider value re-renders within RACE_S of a render


def _unavailable(why: str):
    if os.environ.get("HDAE_CI") == "1":
        pytest.fail(f"{why} (HDAE_CI=1: the browser test must run in CI)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def playwright_api():
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("python playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


def _checkpoint(folder: Path, variant: str = "hdae_u") -> Path:
    """A tiny checkpoint whose codes matter, with random directions and statistics beside it."""
    from hdae_core import HDAE, ModelConfig
    from hdae_core import checkpoint as ck
    from hdae_core.data import Shapes
    from hdae_core.directions import AttributeDirections
    from hdae_core.stats import LatentStats

    torch.manual_seed(0)
    m = HDAE(ModelConfig.preset("tiny", variant)).eval()
    codes_matter(m)
    ck.save(m, folder)
    with torch.no_grad():
        stats = LatentStats.from_codes(m.encode(Shapes(size=16, seed=1).batch(range(32))["image"]))
    stats.save(folder)
    L, D = m.num_levels, m.code_dim
    g = torch.Generator().manual_seed(0)
    dirs = {n: torch.randn(L, D, generator=g) for n in ("red", "large")}
    AttributeDirections(dirs, list(dirs), stats, torch.zeros(2)).save(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return text[-6000:]


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 - gone already, or no psutil: the process group still goes
        return []


def _stop(proc: subprocess.Popen) -> None:
    """Stop voila (its own process group) and the kernels it started (their own sessions)."""
    kids = _descendants(proc.pid)
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture
def voila(tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    port = _free_port()
    log_path = tmp_path / "voila.log"
    env = dict(os.environ)
    env.update({
        "HDAE_EDITOR_CHECKPOINT": str(ckpt), "HDAE_EDITOR_N_IMAGES": "3", "HDAE_EDITOR_STEPS": "10",
        "HDAE_EDITOR_CHECKPOINT_DAE": str(_checkpoint(tmp_path / "dae", "dae")),
        "HDAE_EDITOR_THREADS": "1", "HDAE_EDITOR_OUT_DIR": str(tmp_path / "out"),
        # the kernel runs in notebooks/: make the checkout importable whatever the install looks like
        "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    })
    cmd = [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
           "--show_tracebacks=True", str(NOTEBOOK.relative_to(ROOT))]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited with {proc.returncode} before listening:\n{_log(log_path)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not listen on port {port} within {STARTUP_S} s:\n{_log(log_path)}")
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}/", log_path, tmp_path / "out" / "saved"
    finally:
        _stop(proc)


def _image_bytes(page, css: str = "img.hdae-output") -> bytes:
    data = page.eval_on_selector(
        css, "async img => Array.from(new Uint8Array(await (await fetch(img.src)).arrayBuffer()))",
    )
    return bytes(data)


def _wait_status(page, text: str, what: str, context) -> str:
    """Wait until the status line holds ``text``; a render that failed is reported with the editor's error panel."""
    page.wait_for_function(
        "t => { const s = document.querySelector('.hdae-status')?.textContent || ''; "
        "return s.includes(t) || s === 'failed'; }", arg=text, timeout=RENDER_S * 1000,
    )
    status = page.text_content(".hdae-status")
    assert status != "failed", f"{what}: the editor failed: {page.text_content('.hdae-error')}\n{context()}"
    assert text in status, f"{what}: status {status!r}\n{context()}"
    return status


def _settled(page, text: str, what: str, context) -> str:
    """The status once the kernel has gone quiet: it holds ``text`` and stays unchanged for SETTLE_S (a slider's
    late value re-renders shortly after a render, so a status can show ``text`` before a click is processed)."""
    deadline = time.monotonic() + RENDER_S
    while True:
        status = _wait_status(page, text, what, context)
        time.sleep(SETTLE_S)
        if page.text_content(".hdae-status") == status and not page.locator("button.hdae-render").is_disabled():
            return status
        assert time.monotonic() < deadline, f"{what}: the status did not settle on {text!r}\n{context()}"


def _photo_png() -> bytes:
    """A 48 x 40 photo-like PNG (not square, not the model's size): the upload path crops and resizes it."""
    from PIL import Image

    yy, xx = np.mgrid[0:40, 0:48]
    rgb = np.stack([xx * 5, yy * 6, (xx + yy) * 3], -1).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _click(page, css: str) -> None:
    page.locator(css).first.click()


def _tick(page, label: str) -> None:
    page.get_by_label(label, exact=True).check()


def test_editor_in_voila_with_chromium(playwright_api, voila, tmp_path):
    url, log_path, saved = voila
    console: list[str] = []

    def context() -> str:
        return "browser console:\n" + "\n".join(console[-40:]) + "\nvoila log:\n" + _log(log_path)

    t0 = time.monotonic()
    with playwright_api() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 2400},  # the whole editor, panels and status included
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url, timeout=STARTUP_S * 1000)
            try:
                page.wait_for_selector("button.hdae-render", timeout=STARTUP_S * 1000)
                page.wait_for_selector("img.hdae-output", timeout=30_000)
            except Exception as e:  # noqa: BLE001 - report the page and the server, not only the timeout
                body = page.inner_text("body")[-3000:] if not page.is_closed() else ""
                pytest.fail(f"the editor's widgets did not appear ({e}):\npage:\n{body}\n{context()}")
            _wait_status(page, "press Render", "initial preview", context)
            body = page.inner_text(".hdae-editor")
            for caption in ("original", "reconstruction", "edited", "directions:"):
                assert caption in body, f"no {caption!r} on the page\n{context()}"

            # a thumbnail picks the image; α = 0: the edited panel is the reconstruction
            _click(page, "button.hdae-thumb-1")
            _wait_status(page, "press Render", "thumbnail", context)
            _click(page, "button.hdae-render")
            _wait_status(page, "render 1:", "first render", context)
            before = _image_bytes(page)
            assert before == _image_bytes(page, "img.hdae-reconstruction"), "α = 0 differs from the reconstruction"

            # move the "red" slider with the keyboard (ArrowRight steps by 0.05), then one Render click: the
            # panel must come to show +0.50 without a second click
            handle = page.locator(".hdae-alpha-red .noUi-handle")
            handle.focus()
            for _ in range(10):
                handle.press("ArrowRight")
            readout = page.locator(".hdae-alpha-red .widget-readout")
            page.wait_for_function("el => el.textContent.trim() === '0.50'", arg=readout.element_handle(),
                                   timeout=10_000)
            _click(page, "button.hdae-render")
            status = _settled(page, "red +0.50", "the slider's value after one Render click", context)
            after = _image_bytes(page)
            assert after != before, f"the rendered image did not change\n{context()}"
            assert "rendered in" in status and page.text_content(".hdae-error").strip() == ""

            # random x_T, compare with DAE, the α strip, a partner from its thumbnail, Save, Reset all
            _tick(page, "random x_T")
            _click(page, "button.hdae-render")
            _settled(page, "random x_T, seed", "random x_T", context)
            _tick(page, "compare with DAE")
            _click(page, "button.hdae-render")
            page.wait_for_selector("img.hdae-compare-panel", state="visible", timeout=RENDER_S * 1000)
            _click(page, "button.hdae-strip")
            _wait_status(page, "α strip", "α strip", context)
            page.wait_for_selector("img.hdae-strip-image", state="visible", timeout=RENDER_S * 1000)
            # k, the edited levels and a partner's level, then Save: the recipe holds what the controls say
            page.locator(".hdae-k input").fill("5")
            page.locator(".hdae-level-0 input").uncheck()
            _click(page, "button.hdae-partner-2")
            page.locator(".hdae-mix-1 input").check()  # the tiny model's levels: z¹ (16 px), z² (8 px)
            _click(page, "button.hdae-save")
            page.wait_for_function("() => (document.querySelector('.hdae-saved')?.textContent || '').includes('saved')",
                                   timeout=RENDER_S * 1000)
            assert (saved / "edit-001.png").is_file() and (saved / "edit-001.json").is_file(), context()
            recipe = __import__("json").loads((saved / "edit-001.json").read_text())
            assert recipe["alphas"]["red"] == 0.5 and recipe["x_T"]["mode"] == "random" and recipe["image"]["index"] == 1
            assert "compare" in recipe and recipe["compare"]["variant"] == "dae"
            assert recipe["k"] == 5 and recipe["edit_levels"] == [1], recipe
            assert recipe["partner"]["index"] == 2 and recipe["partner"]["levels"] == [1], recipe
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # an upload joins the gallery as a new thumbnail; paste back shows the edit in the uploaded photo
            with page.expect_file_chooser() as chooser:  # the upload button opens the browser's file dialog
                _click(page, ".hdae-upload")
            chooser.value.set_files(files=[{"name": "photo.png", "mimeType": "image/png", "buffer": _photo_png()}])
            page.wait_for_selector("button.hdae-thumb-3", timeout=RENDER_S * 1000)
            _tick(page, "paste back into the uploaded photo")
            _click(page, "button.hdae-render")
            _settled(page, "pasted back into the upload", "paste back", context)
            page.wait_for_selector("img.hdae-paste", state="visible", timeout=RENDER_S * 1000)
            page.screenshot(path=str(SCREENSHOT.with_name("browser_screenshot_upload.png")), full_page=True)
            _click(page, "button.hdae-reset")
            page.wait_for_function("el => el.textContent.trim() === '0.00'", arg=readout.element_handle(),
                                   timeout=10_000)
            assert not page.get_by_label("random x_T", exact=True).is_checked()
            assert page.locator(".hdae-level-0 input").is_checked() and not page.locator(".hdae-mix-1 input").is_checked()
            assert page.locator(".hdae-k input").input_value() == "all"
            assert page.text_content(".hdae-error").strip() == "", context()
            assert "Traceback" not in page.inner_text("body") and "NameError" not in page.inner_text("body"), \
                f"a cell failed under voila:\n{page.inner_text('body')[-3000:]}"
        finally:
            browser.close()
    print(f"browser test: {time.monotonic() - t0:.1f} s after voila listened")
