"""The built book in a real browser: every TOC page loads, nothing leaves the machine, images and math render,
the results table holds numbers and the reproduce page lists a command per evaluation.

Needs Debian's Chromium (``apt-get install -y chromium``) and the ``playwright`` Python package (its wheel
brings its own driver; ``playwright install`` is not needed). Screenshots go to ``_build/screenshots/``.

When it runs: in CI (``CI`` set, as ``.ci/run`` does) or once the book is built (``make book`` writes
``_build/html``), a missing Chromium, playwright or book is a *failure*: a browser test that silently
skips proves nothing.  A local checkout without a built book skips it.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "_build" / "html"
SCREENSHOTS = REPO / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]
LOCAL = ("http://127.0.0.1", "data:", "blob:", "about:")

REQUIRED = bool(os.environ.get("CI")) or (HTML / "index.html").exists()


def _missing() -> str | None:
    """Why the browser test cannot run here (None when it can)."""
    if not (HTML / "index.html").exists():
        return "book not built (make book)"
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    return None


if _missing() is not None and not REQUIRED:
    pytest.skip(_missing(), allow_module_level=True)


def test_the_browser_test_can_run():
    """In CI, or with a built book, everything the browser test needs must be there."""
    assert _missing() is None, f"browser test cannot run: {_missing()}"


sync_api = pytest.importorskip("playwright.sync_api") if _missing() is None else None


def toc_pages() -> list[str]:
    """The HTML path of every page in _toc.yml (root, chapters inside parts, nested sections)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))
            walk(entry.get("chapters", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return [f"{Path(f).with_suffix('')}.html" for f in files]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server():
    if _missing() is not None:
        pytest.skip(f"{_missing()} (test_the_browser_test_can_run fails for it)")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if _missing() is not None:
        pytest.skip(f"{_missing()} (test_the_browser_test_can_run fails for it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    """A page that records every request leaving 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.external_requests = []
    pg.on("request", lambda r: None if r.url.startswith(LOCAL) else pg.external_requests.append(r.url))
    yield pg
    context.close()


def open_page(page, server: str, path: str):
    response = page.goto(f"{server}/{path}", wait_until="networkidle")
    assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
    return response


def test_every_toc_page_loads_offline_with_images(page, server):
    pages = toc_pages()
    assert len(pages) >= 10, pages
    for path in pages:
        open_page(page, server, path)
        broken = page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
        assert broken == [], f"{path}: images not loaded: {broken}"
    assert page.external_requests == [], f"requests left the machine: {page.external_requests}"


def test_math_is_typeset(page, server):
    open_page(page, server, "book/task.html")
    page.wait_for_selector("mjx-container", timeout=20_000)
    assert page.locator("mjx-container").count() > 3
    assert page.external_requests == []


def test_results_table_shows_numbers(page, server):
    open_page(page, server, "book/results.html")
    cells = page.locator("table tbody td").all_inner_texts()
    numbers = [c for c in cells if re.fullmatch(r"-?\d+(\.\d+)?( ± \d+(\.\d+)?)?", c.strip())]
    assert len(numbers) >= 20, f"too few numeric cells in the results tables: {cells[:40]}"
    text = page.inner_text("main")
    assert "published (mmpose)" in text and "profile" in text


def test_reproduce_page_lists_a_command_per_evaluation(page, server):
    open_page(page, server, "book/reproduce.html")
    text = page.inner_text("main")
    evaluations = yaml.safe_load((REPO / "experiments" / "rows.yaml").read_text())["evaluations"]
    for name in evaluations:
        assert re.search(rf"papermill experiments/evaluate\.ipynb \S*eval_{name}/evaluate\.ipynb .*-p evaluation {name} ",
                         text), f"no papermill command for evaluation {name}"
    assert "torchrun --nproc_per_node" in text


def test_screenshots(page, server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for path, name in [("book/intro.html", "index"), ("book/grouping.html", "method_grouping"),
                       ("book/results.html", "results")]:
        open_page(page, server, path)
        if name != "index":
            page.wait_for_selector("mjx-container", timeout=20_000) if page.locator(".math").count() else None
        target = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(target), full_page=False)
        assert target.stat().st_size > 10_000
    assert page.external_requests == []
