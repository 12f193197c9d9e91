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
import json
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
    """The open dropdown (the rendered profile) holds one wrapped papermill command per evaluation of that
    profile, with the parameters the study passes; the paper-only published rows are not among them."""
    open_page(page, server, "book/reproduce.html")
    data = page.evaluate("() => Object.assign({}, document.querySelector('#training-speed').dataset)")
    profile = data["profile"]
    study = _study()
    text = page.inner_text("main")
    blocks = page.locator("details[open] pre").all_inner_texts()
    commands = [c for block in blocks for c in re.split(r"^mkdir -p ", block, flags=re.M) if "evaluate.ipynb" in c]
    for name, evaluation in study.evaluations(profile).items():
        command = next((c for c in commands if re.search(rf"-p evaluation {name}\s", c)), None)
        assert command, f"no papermill command for evaluation {name}"
        # the study passes `diagnostics` only where rows.yaml sets it; a hand run must record the same fields
        assert ("-p diagnostics True" in command) == bool(evaluation.diagnostics), command
        if evaluation.training:
            assert f"-p training_metrics ../train_{evaluation.training}/metrics.json" in command, command
    shown = {re.search(r"-p evaluation (\S+)", c).group(1) for c in commands}
    assert shown == set(study.evaluations(profile)), shown ^ set(study.evaluations(profile))
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


# --------------------------------------------------------------------------------------------------
# Issue #19: captions, no horizontal overflow at 1280 px, traceable numbers, notebook downloads

OVERFLOW_JS = """() => {
  const article = document.querySelector('.bd-article') || document.querySelector('main');
  const right = article.getBoundingClientRect().right + 1;
  const too_wide = (e) => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > right;
  const name = (e) => (e.id || e.className || e.tagName).toString().slice(0, 60) + ': '
                      + (e.innerText || '').trim().slice(0, 60);
  const out = [];
  if (article.scrollWidth > article.clientWidth + 1) out.push('article ' + article.scrollWidth + ' > ' + article.clientWidth);
  for (const e of article.querySelectorAll('div.math, mjx-container[display="true"], table, figure, .cell_output'))
    if (too_wide(e)) out.push(name(e));
  return out;
}"""


WIDTHS = (1280, 390)

# What overflows: the page itself (the body wider than the window), and any table or display equation
# wider than the column that is not inside a box that scrolls sideways.
PAGE_OVERFLOW_JS = """() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) out.push('page ' + doc.scrollWidth + ' > ' + window.innerWidth);
  const article = document.querySelector('.bd-article') || document.querySelector('main');
  const right = article.getBoundingClientRect().right + 1;
  const scrolls = (e) => { for (let a = e; a && a !== article; a = a.parentElement) {
      const style = getComputedStyle(a);
      if (['auto', 'scroll'].includes(style.overflowX) && a.getBoundingClientRect().right <= right) return true; }
    return false; };
  const name = (e) => (e.id || e.className || e.tagName).toString().slice(0, 60) + ': '
                      + (e.innerText || '').trim().slice(0, 60);
  for (const e of article.querySelectorAll('table, mjx-container[display="true"], figure img, pre'))
    if (e.getBoundingClientRect().right > right && !scrolls(e)) out.push(name(e));
  return out;
}"""

# A numeric cell that the browser laid out on more than one line has been split.
SPLIT_NUMBERS_JS = """() => Array.from(document.querySelectorAll('.bd-article td')).filter(td => {
    if (!/^[-+]?[\\d.,]+( ± [\\d.]+)?( \\[[-\\d., ]+\\])?$/.test(td.innerText.trim())) return false;
    const range = document.createRange();
    range.selectNodeContents(td);
    const lines = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
    return lines.size > 1;
  }).map(td => td.innerText.trim())"""

RAW_CELLS_JS = """() => Array.from(document.querySelectorAll('.bd-article td, .bd-article th'))
    .map(c => c.innerText.trim()).filter(t => ['None', 'NaN', 'nan', '<NA>', 'NaT'].includes(t))"""


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_the_screen_without_console_errors(browser, server, width):
    """At 1280 and 390 px: the page never scrolls sideways (wide tables, equations and commands scroll in
    their own box), no number is split over two lines, no cell shows a raw None/NaN, and nothing is
    logged as a JavaScript error."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    problems = {}
    try:
        for path in toc_pages():
            open_page(page, server, path)
            if page.locator(".math").count():
                page.wait_for_selector("mjx-container", timeout=20_000)
            found = (page.evaluate(PAGE_OVERFLOW_JS) + [f"split number {t!r}" for t in page.evaluate(SPLIT_NUMBERS_JS)]
                     + [f"raw cell {t!r}" for t in page.evaluate(RAW_CELLS_JS)])
            if found:
                problems[path] = found
            if width == WIDTHS[-1] and path in ("book/results.html", "book/task.html"):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / f"{Path(path).stem}_{width}.png"), full_page=False)
    finally:
        context.close()
    assert problems == {}, f"at {width} px: {problems}"
    assert errors == [], f"console errors at {width} px: {errors}"


def test_figures_get_the_width_their_labels_were_sized_for(page, server):
    """``bookutil.legible`` sizes figure text for a column of ``COLUMN_PX``: at 1280 px every figure is shown
    at least that wide (or at its full size, when smaller), so its labels are at least ``MIN_LABEL_PX``."""
    narrow = {}
    for path in toc_pages():
        open_page(page, server, path)
        shown = page.evaluate("""() => Array.from(document.querySelectorAll('.bd-article figure img'))
            .map(i => [i.src.split('/').pop(), i.naturalWidth, i.getBoundingClientRect().width])""")
        small = [name for name, natural, width in shown if width + 1 < min(natural, _bookutil().COLUMN_PX)]
        if small:
            narrow[path] = small
    assert narrow == {}, f"figures shown narrower than their labels were sized for: {narrow}"


def test_every_figure_is_numbered_and_captioned(page, server):
    """Every image a chapter shows sits in a figure whose caption starts with its number ("Fig. N")."""
    missing, seen = {}, 0
    for path in toc_pages():
        open_page(page, server, path)
        bare = page.evaluate("""() => Array.from(document.querySelectorAll('.bd-article img'))
            .filter(i => !i.closest('figure') && !i.closest('.sd-card') && !i.closest('.navbar-brand'))
            .map(i => i.src.split('/').pop())""")
        captions = page.locator(".bd-article figure figcaption").all_inner_texts()
        unnumbered = [c for c in captions if not re.match(r"\s*Fig\.\s*\d+", c)]
        seen += len(captions)
        if bare or unnumbered:
            missing[path] = {"without figure": bare, "caption without number": unnumbered}
    assert missing == {}, missing
    assert seen >= 15, f"only {seen} numbered figures in the book"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    import statistics
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pct(mean: float, std: float | None) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std else "")


def _table(page, selector: str) -> tuple[dict, list[str], list[list[str]]]:
    """(data attributes of the wrapper, column names, rows of cell texts) of a pandas HTML table."""
    data = page.evaluate(f"() => Object.assign({{}}, document.querySelector('{selector}').dataset)")
    head = page.locator(f"{selector} table thead tr").first.locator("th").all_inner_texts()
    rows = [r.locator("th, td").all_inner_texts() for r in page.locator(f"{selector} table tbody tr").all()]
    return data, [h.strip() for h in head], rows


def _gathered(results: Path, pattern: str) -> list[Path]:
    """The ``metrics.json`` files under ``results`` matching ``pattern`` that the summary averages: those it
    names in ``skipped`` (stale, unreadable or unstamped) left out."""
    summary = results / "summary.json"
    skipped = json.loads(summary.read_text()).get("skipped", []) if summary.exists() else []
    left_out = {s["file"] for s in skipped}
    return [p for p in sorted(results.glob(pattern)) if p.relative_to(results.parents[1]).as_posix() not in left_out]


def test_results_numbers_trace_to_committed_metrics(page, server):
    """Every number of the results tables equals the metrics.json files of its profile (mean ± std over
    seeds) or the published row of rows.yaml it claims to be."""
    open_page(page, server, "book/results.html")
    data, head, rows = _table(page, "#study-evaluations")
    results = REPO / data["results"]
    assert rows and results.is_dir(), (data, results)
    columns = {name: i for i, name in enumerate(head) if name}
    checked = 0
    for cells in rows:
        name = cells[0].strip()
        seeds = _gathered(results, f"eval/{name}/seed*/metrics.json")
        assert seeds, f"{name}: no metrics.json under {results / 'eval' / name}"
        metrics = [json.loads(p.read_text()) for p in seeds]
        assert int(cells[columns["seeds"]]) == len(metrics), name
        for key in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR"):
            # CrowdPose's protocol has no area ranges: its rows show "–" for AP_M and AP_L
            expected = _pct(*_mean_std([m[key] for m in metrics])) if key in metrics[0] else "–"
            assert cells[columns[key]].strip() == expected, (name, key)
            checked += 1
        assert cells[columns["parameters"]].replace(",", "") == str(metrics[0]["parameters"]), name
    data, head, rows = _table(page, "#published-table")
    spec = yaml.safe_load((REPO / "experiments" / "rows.yaml").read_text())
    columns = {name: i for i, name in enumerate(head) if name}
    evaluation = None
    for cells in rows:
        if len(cells) == len(head):  # the first row of an evaluation carries its name (rowspan)
            evaluation, cells = cells[0].strip(), cells[1:]
        source, values = cells[0].strip(), cells[1:]
        for key, text in zip(head[2:], values):
            text = text.strip()
            if source.startswith("published ("):
                who = source[len("published ("):-1]
                row = next(r for r in spec["published"][who]["rows"] if r["evaluation"] == evaluation)
                expected = f"{100 * row[key]:.1f}" if key in row else "not published"
            elif source.startswith("hhrnet, ") and source.endswith(" profile"):
                seeds = _gathered(results, f"eval/{evaluation}/seed*/metrics.json")
                expected = _pct(*_mean_std([json.loads(p.read_text())[key] for p in seeds])) if seeds else "not run"
            else:
                continue
            assert text == expected, (evaluation, source, key, text, expected)
            checked += 1
    assert checked >= 50, checked


def test_ablations_summary_counts_trace_to_the_summary(page, server):
    """The ablations chapter's summary states the comparisons measured, their outcomes and the pooled seed
    SD that its profile's summary.json holds."""
    open_page(page, server, "book/results.html")
    data, _, _ = _table(page, "#study-evaluations")
    summary = json.loads((REPO / data["results"] / "summary.json").read_text())
    open_page(page, server, "book/ablations.html")
    text = page.inner_text("main")
    stated = re.search(r"(\d+) of the (\d+) expected comparisons of the (\d+) families have an interval "
                       r"\((\d+) holds, (\d+) contradicted, (\d+) undecided", text)
    assert stated, "the ablations summary does not count the comparisons"
    families = summary["families"].values()
    outcomes = [c["outcome"] for f in families for c in f["checks"]]
    assert tuple(map(int, stated.groups())) == (
        len(outcomes), sum(f["expected"] for f in families), len(summary["families"]),
        outcomes.count("holds"), outcomes.count("contradicted"), outcomes.count("undecided")), stated.group(0)
    pool = (summary["seed_noise"]["between_trainings"] or {}).get("AP")
    between = f"{100 * pool['sd']:.2f} points ({pool['df']} df) between two trainings" if pool else "not measured yet"
    assert f"The pooled seed SD of AP is {between}" in text


def test_results_diagnostics_trace_to_metrics(page, server):
    """The diagnostics table equals the ``diag_*`` keys of the metrics.json files (mean ± std over the seeds
    that have them) and comes with its figure; without any, the page says how to compute them."""
    open_page(page, server, "book/results.html")
    data, _, _ = _table(page, "#study-evaluations")
    results = REPO / data["results"]
    diagnosed = {}
    for path in _gathered(results, "eval/*/seed*/metrics.json"):
        metrics = json.loads(path.read_text())
        if metrics.get("diag_AP") is not None:
            diagnosed.setdefault(path.parent.parent.name, []).append(metrics)
    if not diagnosed:
        assert page.locator("#diagnostics-table").count() == 0
        assert page.locator("figure#fig-results-diagnostics img").count() == 0
        assert "has diagnostics yet" in page.inner_text("main")
        return
    _, head, rows = _table(page, "#diagnostics-table")
    keys = {"network": "diag_AP", "GT tags": "diag_AP_gt_tags", "GT heatmaps": "diag_AP_gt_heatmaps",
            "ceiling": "diag_AP_ceiling", "single-person": "diag_AP_single", "multi-person": "diag_AP_multi"}
    columns = {name: i for i, name in enumerate(head) if name}
    assert sorted(cells[0].strip() for cells in rows) == sorted(diagnosed)
    for cells in rows:
        metrics = diagnosed[cells[0].strip()]
        for column, key in keys.items():
            values = [m[key] for m in metrics if m.get(key) is not None]
            assert cells[columns[column]].strip() == (_pct(*_mean_std(values)) if values else "–"), (cells[0], key)
    assert page.locator("figure#fig-results-diagnostics img").count() == 1


def test_trained_network_figures_show_the_kept_networks(page, server):
    """The embedding, higher-resolution, grouping and results chapters show the rendered profile's kept
    networks (committed fp16 weights, ``keep_weights`` in rows.yaml) as numbered figures, or say that there
    are none."""
    open_page(page, server, "book/results.html")
    data, _, _ = _table(page, "#study-evaluations")
    results = REPO / data["results"]
    figures = {("book/embedding.html", "fig-embedding-trained"): ("w32_512",),
               ("book/higher.html", "fig-higher-trained"): ("w32_512", "hrnet_baseline"),
               ("book/grouping.html", "fig-grouping-trained"): ("w32_512",),
               ("book/results.html", "fig-results-failures"): ("w32_512",)}
    for (path, figure), trainings in figures.items():
        kept = all((results / "train" / t / "seed0" / "weights.pth").exists() for t in trainings)
        open_page(page, server, path)
        shown = page.locator(f"figure#{figure} img").count()
        if kept:
            assert shown == 1, f"{path}: no {figure} although {results} keeps the trained networks"
        else:
            assert shown == 0 and "python -m hhrnet study --profile" in page.inner_text("main"), path


def test_results_page_shows_provenance(page, server):
    open_page(page, server, "book/results.html")
    text = page.inner_text("main")
    assert "Provenance" in text and "commit" in text and "code since" in text
    metrics = json.loads(next((REPO / "experiments" / "results").glob("*/eval/*/seed0/metrics.json")).read_text())
    assert metrics.get("git_commit") is None or metrics["git_commit"] in text or "No result files" in text


def test_chapters_offer_their_notebook(page, server):
    """The download menu of every executed chapter links the .ipynb, and the file is served."""
    for path in toc_pages():
        md = REPO / Path(path).with_suffix(".md")
        if not md.exists() or "```{code-cell}" not in md.read_text():
            continue
        open_page(page, server, path)
        hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href') || '')")
        notebook = [h for h in hrefs if h.endswith(Path(path).with_suffix(".ipynb").name)]
        assert notebook, f"{path}: no .ipynb download link"
        response = page.request.get(f"{server}/{Path(path).parent}/{notebook[0]}")
        assert response.status == 200 and json.loads(response.body())["cells"], path


# --------------------------------------------------------------------------------------------------
# Issue #30: pages agree on what they count (seeds, runs measured, durations)


@functools.lru_cache(maxsize=None)
def _bookutil():
    """The book's shared module (``book/bookutil.py``), as the chapters import it."""
    import sys
    sys.path.insert(0, str(REPO / "book"))
    import bookutil
    return bookutil


def _study():
    return _bookutil().Study.load(REPO / "experiments")


def _column(rows: list[list[str]], head: list[str], key: str, value: str) -> dict[str, str]:
    columns = {name: i for i, name in enumerate(head)}
    return {cells[columns[key]].strip(): cells[columns[value]].strip() for cells in rows}


def test_pages_agree_on_durations_seeds_and_runs(page, server):
    """The results and reproduce pages state the same training minutes, the same number of trainings and
    evaluations measured and the same total compute; the results page's seed sentence matches its table
    and the metrics.json files."""
    open_page(page, server, "book/results.html")
    data, head, rows = _table(page, "#study-evaluations")
    results = REPO / data["results"]
    minutes_results = _column(rows, head, "training", "train (min)")
    seeds_table = _column(rows, head, "training", "seeds")
    scale = page.locator("table").first.inner_text()
    results_text = page.inner_text("main")
    open_page(page, server, "book/reproduce.html")
    _, head, rows = _table(page, "#training-speed")
    minutes_reproduce = {cells[0].strip(): cells[head.index("train (min)")].strip() for cells in rows}
    reproduce_text = page.inner_text("main")

    assert minutes_results and minutes_results == {k: minutes_reproduce[k] for k in minutes_results}, \
        (minutes_results, minutes_reproduce)
    trainings = len(list(results.glob("train/*/seed*/metrics.json")))
    evaluations = len(list(results.glob("eval/*/seed*/metrics.json")))
    assert f"({evaluations} result files, {trainings} trainings)" in scale, scale
    total = re.search(r"[\d.]+ hours of compute: [\d.]+ h for (\d+) trainings, [\d.]+ h for (\d+) evaluations"
                      r"(, [\d.]+ h for \d+ shared trunk\(s\))?", reproduce_text)
    assert total and (int(total.group(1)), int(total.group(2))) == (trainings, evaluations), total
    assert total.group(0) in results_text, "the two pages state different totals"
    for n, names in re.findall(r"(\d+) seeds? \(([^)]*)\)", scale):
        for training in names.split(", "):
            on_disk = len(list((results / "train" / training).glob("seed*/metrics.json")))
            assert int(n) == on_disk, (training, n, on_disk)
            if training in seeds_table:
                assert int(seeds_table[training]) <= on_disk, (training, seeds_table[training], on_disk)
