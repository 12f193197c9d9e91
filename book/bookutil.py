"""What every chapter shares: where the repository and the study's results are, how numbers are shown,
where each result came from, and the study's trained networks.

A chapter's first code cell is its papermill ``parameters`` cell (``profile``, ``results``); the next one
calls ``setup(profile, results)``.  The book build sets ``HHRNET_PROFILE``; papermill's ``-p profile smoke``
overrides it.  Nothing here computes a study result: it reads ``experiments/results/<profile>`` (and, for
the networks' figures, generates a few validation scenes when the study's data is not on this machine).
A trained network's failure cases on such scenes are sorted by ``hhrnet.failures``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# The one place the book imports the study's provenance check (which sources changed since a result ran).
from hhrnet.study import Study, code_changes

DEFAULT_PROFILE = "cpu"  # what `make book` renders: the committed study

# Tables wrap instead of truncating ("…"): no column width limit, no row/column elision.
pd.set_option("display.max_colwidth", None)
pd.set_option("display.max_columns", None)
pd.set_option("display.max_rows", 200)
pd.set_option("display.width", None)


def find_repo(start: Path | None = None) -> Path:
    """The repository root (the folder with ``_toc.yml``), from the notebook's folder or any folder below it."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "_toc.yml").exists() and (folder / "experiments" / "rows.yaml").exists():
            return folder
    raise FileNotFoundError(f"no hhrnet repository (a folder with _toc.yml) at or above {start}")


@dataclass
class Book:
    """What a chapter needs to read the study: the repository, the profile and its results folder."""

    repo: Path
    profile: str
    results: Path
    study: Study

    @property
    def shared(self) -> Path:
        return self.repo.parent / "shared"

    def summary(self) -> dict[str, Any]:
        path = self.results / "summary.json"
        return json.loads(path.read_text()) if path.exists() else {"rows": []}

    def rows(self) -> dict[str, dict[str, Any]]:
        """The gathered summary rows by evaluation name (empty before any run)."""
        return {r["evaluation"]: r for r in self.summary().get("rows", [])}

    def families(self) -> dict[str, Any]:
        """``summary.json``'s per-family comparisons with 95% intervals, when the study wrote them."""
        return self.summary().get("families") or {}

    def network(self, training: str) -> Path | None:
        """The study's ``training`` network (seed 0): its committed fp16 ``weights.pth``, else the cache's."""
        kept = self.results / "train" / training / "seed0" / "weights.pth"
        cached = self.study.checkpoint_dir(training, self.profile, 0) / "last.pth"
        return next((p for p in (kept, cached) if p.exists()), None)

    def validation_config(self, evaluation: str, scenes: int = 16) -> Any:
        """``evaluation``'s config with a validation split that exists here: the study's own, or, when it
        is not generated on this machine, ``scenes`` scenes of the same distribution made for the book
        (the first scenes are the same whatever their number: each scene has its own seed)."""
        from hhrnet.study import generate_synthetic

        cfg = self.study.evaluation_config(evaluation, self.profile)
        syn = self.study.data_spec(self.profile).get("synthetic")
        if syn is None or (Path(cfg.train.data_root) / "annotations").exists():
            return cfg
        root = self.study.cache / "data" / f"book_{self.profile}_val{scenes}"
        generate_synthetic(root, {**syn, "train": 0, "val": scenes})
        return cfg.override(**{"train.data_root": str(root)})


def setup(profile: str | None = None, results: str | Path | None = None) -> Book:
    """Resolve the parameters cell: ``profile`` (else ``$HHRNET_PROFILE``, else cpu) and its results folder."""
    repo = find_repo()
    profile = profile or os.environ.get("HHRNET_PROFILE") or DEFAULT_PROFILE
    study = Study.load(repo / "experiments")
    folder = Path(results) if results else study.results_dir(profile)
    if not folder.is_absolute():
        folder = (repo / folder) if not folder.exists() else folder.resolve()
    if str(repo) not in sys.path:  # `import hhrnet` works from a copy of the notebook run anywhere in the repo
        sys.path.insert(0, str(repo))
    return Book(repo, profile, folder, study)


def pct(row: dict[str, Any] | None, key: str, std: bool = True) -> str:
    """An AP-like value (0-1) in points with one decimal, ``± std`` over seeds when there is one."""
    value = row.get(key) if row else None
    if value is None:
        return "–"
    spread = row.get(f"{key}_std") if std else None
    return f"{100 * value:.1f}" + (f" ± {100 * spread:.1f}" if spread else "")


def interval(check: dict[str, Any]) -> str:
    """ΔAP with its 95% interval in AP points, e.g. ``+1.2 [0.4, 2.0]``."""
    return f"{100 * check['delta']:+.1f} [{100 * check['low']:.1f}, {100 * check['high']:.1f}]"


def provenance(book: Book) -> pd.DataFrame:
    """One row per result file: run, seed, the commit it ran at, and which of the sources it ran have changed."""
    records = []
    for path in sorted(book.results.glob("*/*/seed*/metrics.json")):
        metrics = json.loads(path.read_text())
        kind, run, seed = path.parts[-4], path.parts[-3], path.parts[-2]
        changed = code_changes(metrics.get("code"))
        records.append({"result": f"{kind}/{run}", "seed": seed.removeprefix("seed"),
                        "commit": metrics.get("git_commit") or "–",
                        "code since": "changed" if changed else "unchanged",
                        "changed sources": ", ".join(changed) or "–",
                        "file": path.relative_to(book.repo).as_posix()})
    return pd.DataFrame(records)


def stale_warning(book: Book, table: pd.DataFrame) -> str | None:
    """A MyST admonition when any result was computed by other ``hhrnet`` code than the one building this page."""
    if table.empty:
        return None
    changed = table[table["code since"] == "changed"]
    if changed.empty:
        return None
    commits = ", ".join(f"`{c}`" for c in sorted(set(changed["commit"])))
    return (":::{warning}\n"
            f"**The code has changed since these results were computed.** {len(changed)} of {len(table)} result "
            f"files of the `{book.profile}` profile ran `hhrnet` sources that have changed since "
            f"(at commit(s) {commits}). The numbers are what that code measured; re-run "
            f"`python -m hhrnet study --profile {book.profile}` to recompute the stale ones.\n:::")
