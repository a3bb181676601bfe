"""A student's view: JupyterLab in headless Chromium runs a chapter down to its first control, a slider is dragged,
and the figure changes.

Needs Debian's Chromium (/usr/bin/chromium, installed by .ci/run) and Playwright (the dev extra); without
them the test is skipped, unless DCLIP_REQUIRE_BROWSER=1 (as `make browser` sets) makes their absence a failure.
The server listens on 127.0.0.1 only, with a random token, in a temporary folder holding a copy of the chapter.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("DCLIP_CHROMIUM", "/usr/bin/chromium")
CHAPTER = Path(
    os.environ.get("DCLIP_BROWSER_CHAPTER", Path(__file__).resolve().parents[1] / "notebooks" / "01_ddpm.ipynb")
)
# The flags this machine's closed network needs (no background connections), and no sandbox as root.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("DCLIP_REQUIRE_BROWSER") == "1":
            pytest.fail("the browser test needs " + " and ".join(missing))
        pytest.skip("needs " + " and ".join(missing))


def _cell_after_first_control(chapter: Path) -> int:
    """Index of the cell after the chapter's first control (a code cell that calls a ``*_control(...)`` builder)."""
    import nbformat

    cells = nbformat.read(chapter, as_version=4).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and "_control(" in cell.source:
            return i + 1
    raise AssertionError(f"{chapter.name} has no control cell")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the chapter; yields its base URL and token."""
    _require()
    shutil.copy(CHAPTER, tmp_path / CHAPTER.name)
    port, token = _free_port(), os.urandom(12).hex()
    env = dict(os.environ, DCLIP_WORLD="tiny", TQDM_DISABLE="1", DCLIP_CACHE=str(tmp_path / "cache"))
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")  # no user settings (themes, autosave) leak in
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1"]
    cmd += [f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}"]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_student_runs_a_chapter_drags_its_t_slider_and_the_figure_changes(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, token = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # a fresh temporary profile
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{CHAPTER.name}?token={token}")
            page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=120_000)  # kernel up
            # As a student who wants the slider: select the cell after the control, then Run > Run All Above
            # Selected Cell (the chapter's long sampling cells further down are not needed for it).
            first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
            below_control = _cell_after_first_control(CHAPTER)
            for _ in range(3):  # a click before the notebook is wired to its kernel may be lost: then again
                page.locator(".jp-Cell").first.click()
                page.keyboard.press("Escape")  # command mode
                for _ in range(below_control):
                    page.keyboard.press("j")
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_role("menuitem", name="Run All Above Selected Cell", exact=True).first.click()
                try:
                    expect(first_prompt).not_to_have_text("[ ]:", timeout=20_000)
                    break
                except AssertionError:
                    continue

            control = page.locator(".widget-vbox").filter(has=page.locator(".widget-slider")).first
            status = control.locator(".widget-html").first
            expect(status).to_contain_text("drawn in", timeout=480_000)  # the control is drawn
            # a slider's change waits in the kernel's queue until the cells above it have run
            expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=480_000)
            control.scroll_into_view_if_needed()
            image = control.locator("img").first
            before, status_before = image.screenshot(), status.inner_text()

            handle = control.locator(".noUi-handle").first
            track = control.locator(".noUi-target").first
            h, t = handle.bounding_box(), track.bounding_box()
            page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
            page.mouse.down()
            for frac in (0.6, 0.7, 0.8, 0.9):  # a drag through several values, released near the end
                page.mouse.move(t["x"] + frac * t["width"], h["y"] + h["height"] / 2, steps=5)
            page.mouse.up()

            expect(status).not_to_have_text(status_before, timeout=60_000)
            expect(status).to_contain_text("drawn in", timeout=120_000)
            after = image.screenshot()
            assert after != before, "the figure did not change after the slider moved"
            t_before = int(status_before.split("t = ")[1].split(":")[0])
            t_after = int(status.inner_text().split("t = ")[1].split(":")[0])
            assert t_after > t_before + 200, (status_before, status.inner_text())
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print("screenshot:", tmp_path / "failure.png")
            raise
        finally:
            browser.close()
