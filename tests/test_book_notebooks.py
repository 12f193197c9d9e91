"""The teacher's path: every chapter is a notebook papermill can run with another profile.

The chapters' only source is ``book/<chapter>.md`` (MyST); ``jupytext`` writes ``book/<chapter>.ipynb``
from it (git-ignored, so the two never disagree), and papermill runs it from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def chapters() -> list[Path]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    return [REPO / f"{f}.md" for f in files if "```{code-cell}" in (REPO / f"{f}.md").read_text()]


@pytest.mark.parametrize("md", chapters(), ids=lambda p: p.stem)
def test_first_code_cell_is_the_parameters_cell(md):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(md, fmt="myst")
    assert notebook.metadata.get("kernelspec", {}).get("language") == "python", md.name
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), f"{md.name}: first code cell is not tagged parameters"
    assert "profile = " in code[0].source and "results = " in code[0].source, md.name


def test_grouping_chapter_runs_with_papermill():
    """`jupytext` then `papermill book/grouping.ipynb out.ipynb -p profile smoke`, as the reproduce chapter says."""
    jupytext = pytest.importorskip("jupytext")
    pytest.importorskip("papermill")
    if not (REPO.parent / "shared" / "data" / "coco_mini").exists():
        pytest.skip("../shared/data/coco_mini is missing")
    source = REPO / "book" / "grouping.md"
    notebook = REPO / "book" / "grouping.ipynb"
    jupytext.write(jupytext.read(source, fmt="myst"), notebook)
    out = REPO / "_build" / "papermill" / "grouping.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("HHRNET_PROFILE", None)
    run = subprocess.run([sys.executable, "-m", "papermill", "book/grouping.ipynb", str(out), "-p", "profile", "smoke",
                          "--no-progress-bar", "-k", "python3"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    executed = json.loads(out.read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "profile = \"smoke\"" in "".join(injected[0]["source"])
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


def test_the_smoke_profiles_printed_commands_run(tmp_path):
    """The reproduce page's papermill commands of the smoke profile, as printed (``bookutil.papermill_commands``
    after the ``hh_config`` function), train ``w32_512`` and evaluate it; the evaluation's metrics carry the
    training's size and time, which only ``-p training_metrics`` brings."""
    pytest.importorskip("papermill")
    sys.path.insert(0, str(REPO / "book"))
    from bookutil import HH_CONFIG, papermill_commands
    from hhrnet.study import Study

    commands = papermill_commands(Study.load(REPO / "experiments"), "smoke")
    assert "published" not in commands, "the smoke profile lists the paper-only published evaluations"
    training, evaluation = commands["w32_512"][0], commands["w32_512"][1]
    assert "eval_w32_512_ss/" in evaluation and "-p training_metrics ../train_w32_512/metrics.json" in evaluation
    assert max(len(line) for c in (training, evaluation) for line in c.splitlines()) <= 90, "commands are not wrapped"
    (tmp_path / "experiments").symlink_to(REPO / "experiments")  # the commands run from a repository root
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}  # python, papermill
    script = "\n".join(["set -euo pipefail", HH_CONFIG, training + " --no-progress-bar -k python3",
                        evaluation + " --no-progress-bar -k python3"])
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    trained = json.loads((tmp_path / "runs/smoke/train_w32_512/metrics.json").read_text())
    evaluated = json.loads((tmp_path / "runs/smoke/eval_w32_512_ss/metrics.json").read_text())
    assert evaluated["evaluation"] == "w32_512_ss" and 0 <= evaluated["AP"] <= 1
    for key in ("parameters", "train_seconds", "iterations"):
        assert evaluated[key] == trained[key] is not None, key


def _bookutil():
    sys.path.insert(0, str(REPO / "book"))
    import bookutil
    return bookutil


def test_legible_sizes_text_for_the_width_the_page_shows_and_adds_colour_bars():
    """A 12-inch figure is shrunk to the column, so its 8-pt title grows until it is MIN_LABEL_PX there; a
    heatmap gets a colour bar, a signed map (tags) and an RGB image do not; a WIDE figure is shown at
    full size and keeps text already readable there."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    bookutil = _bookutil()
    fig, (heat, signed, rgb) = plt.subplots(1, 3, figsize=(12, 3), dpi=100)
    heat.imshow(np.random.default_rng(0).random((8, 8)))
    signed.imshow(np.linspace(-1, 1, 64).reshape(8, 8), vmin=-1, vmax=1)
    rgb.imshow(np.zeros((8, 8, 3)))
    title = heat.set_title("heatmap", fontsize=8)
    bookutil.legible(fig)
    shown_px_per_pt = min(fig.dpi, bookutil.COLUMN_PX / 12) / 72
    assert title.get_fontsize() * shown_px_per_pt == pytest.approx(bookutil.MIN_LABEL_PX)
    assert [image.colorbar is not None for ax in (heat, signed, rgb) for image in ax.get_images()] == [True, False, False]
    assert len(fig.axes) == 4
    bookutil.legible(fig)  # shown again: no second colour bar
    assert len(fig.axes) == 4

    wide, ax = plt.subplots(figsize=(15, 3), dpi=100)
    wide.set_label(bookutil.WIDE)
    label = ax.text(0, 0, "branch", fontsize=7)
    bookutil.legible(wide)
    assert label.get_fontsize() == 7  # 7 pt at 100 dpi is 9.7 px at full size
    plt.close("all")


def test_study_counts_and_costs_read_the_committed_results():
    """Seeds and runs are counted from the metrics.json files, and each run's minutes from papermill's record
    in the notebook beside it."""
    bookutil = _bookutil()
    book = bookutil.setup("cpu")
    counts = bookutil.study_counts(book)
    files = sorted(book.results.glob("*/*/seed*/metrics.json"))
    assert counts.trainings + counts.evaluations == len(files) > 0
    for training, seeds in counts.seeds.items():
        assert seeds == len(list((book.results / "train" / training).glob("seed*/metrics.json")))
        assert f"{seeds} seed" in counts.seeds_sentence() and training in counts.seeds_sentence()
    costs = bookutil.run_costs(book)
    runs = costs[~costs["result"].str.startswith("trunk/")]
    assert len(runs) == len(files)
    trunks = {f"trunk/{n}" for n, lv in book.study.definition.levers.items()
              if lv.trunk in book.study.profile_spec("cpu").backbones.values()
              and (book.study.root / "results" / "levers" / f"{n}.json").exists()}
    assert set(costs["result"]) - set(runs["result"]) == trunks  # the shared trunks count in the cost
    assert "h for" in bookutil.total_compute(costs)
    first = files[0]
    notebook = next(first.parent.glob("*.ipynb"))
    expected = json.loads(notebook.read_text())["metadata"]["papermill"]["duration"]
    assert costs.iloc[0]["seconds"] == expected
    assert costs.iloc[0]["notebook (min)"] == bookutil.minutes(expected) == f"{expected / 60:.1f}"
    assert bookutil.minutes(None) == "–"
    for _, row in runs[runs["result"].str.startswith("train/")].iterrows():
        folder = book.results / row["result"] / f"seed{row['seed']}"
        duration = json.loads((folder / "train.ipynb").read_text())["metadata"]["papermill"]["duration"]
        clock = json.loads((folder / "metrics.json").read_text())["train_seconds"]
        assert row["seconds"] == max(duration, clock)  # a resumed training's notebook records its last segment only


def test_every_cited_work_is_in_the_bibliography_and_cited_one_way():
    """Each ``{cite:…}`` key is an entry of book/references.bib, each entry is cited, and no page names a work
    in plain text ("et al.", an arXiv link) instead of citing it."""
    import re

    entries = set(re.findall(r"^@\w+\{([^,]+),", (REPO / "book" / "references.bib").read_text(), re.M))
    cited, plain = set(), {}
    for page in sorted((REPO / "book").glob("*.md")):
        text = page.read_text()
        for keys in re.findall(r"\{cite:\w+\}`([^`]+)`", text):
            cited |= {k.strip() for k in keys.split(",")}
        found = re.findall(r"\bet al\.|arxiv\.org/abs", text)
        if found:
            plain[page.name] = found
    assert cited - entries == set(), "cited but not in references.bib"
    assert entries - cited == set(), "in references.bib but never cited"
    assert plain == {}, "works named in plain text instead of cited"
