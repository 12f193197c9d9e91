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
