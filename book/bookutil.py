"""What every chapter shares: where the repository and the study's results are, how numbers are shown,
where each result came from, and the study's trained networks.

A chapter's first code cell is its papermill ``parameters`` cell (``profile``, ``results``); the next one
calls ``setup(profile, results)``.  The book build sets ``HHRNET_PROFILE``; papermill's ``-p profile smoke``
overrides it.  Nothing here computes a study result: it reads ``experiments/results/<profile>`` (and, for
the networks' figures, generates a few validation scenes when the study's data is not on this machine).
A trained network's failure cases on such scenes are sorted by ``hhrnet.failures``.

Every count, duration and command that more than one page states is computed here, once
(``study_counts``, ``minutes``, ``run_costs``, ``papermill_commands``), so that no two pages can disagree;
``tests/test_book_consistency.py`` reads the built pages and checks that they do not.  Every figure a
chapter shows passes through ``legible`` (labels of at least 9 px at the column's width) on its way out.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.text import Text

# The one place the book imports the study's provenance check (which sources changed since a result ran).
from hhrnet.study import Study, code_changes

DEFAULT_PROFILE = "cpu"  # what `make book` renders: the committed study

# Tables wrap instead of truncating ("…"): no column width limit, no row/column elision.
pd.set_option("display.max_colwidth", None)
pd.set_option("display.max_columns", None)
pd.set_option("display.max_rows", 200)
pd.set_option("display.width", None)

COLUMN_PX = 672   # a figure's width in the column at 1280 px (the browser test checks that figures get it)
MIN_LABEL_PX = 9  # the smallest text a figure may show at that width
WIDE = "wide"     # a figure labelled so (``fig.set_label(WIDE)``) is shown at full size in a scrolling box
plt.rcParams["figure.dpi"] = 100


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
        data = self.study.data_spec(self.profile, self.study.evaluations(self.profile)[evaluation].training)
        syn = data.get("synthetic")
        if syn is None or (Path(cfg.train.data_root) / "annotations").exists():
            return cfg
        keypoints = f"_{syn['keypoints']}" if "keypoints" in syn else ""
        root = self.study.cache / "data" / f"book_{self.profile}_val{scenes}{keypoints}"
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
            f"(at commit(s) {commits}). The study's summary leaves the stale evaluations out, so the tables "
            f"and verdicts of this book average only results of the current code; "
            f"`python -m hhrnet study --profile {book.profile}` re-runs the stale ones.\n:::")


def paper_rows(study: Study, evaluation: str) -> list[dict[str, Any]]:
    """The rows of the paper's own ablation table (rows.yaml ``published.paper_ablations``) of ``evaluation``."""
    return [r for r in study.spec["published"]["paper_ablations"]["rows"] if r.get("evaluation") == evaluation]


def minutes(seconds: float | None) -> str:
    """A duration as every page writes it: minutes with one decimal ("–" when not recorded)."""
    return "–" if seconds is None else f"{seconds / 60:.1f}"


def training_seconds(row: dict[str, Any]) -> float | None:
    """A training's wall clock as its ``metrics.json`` records it (the summary row carries it along)."""
    return row.get("train_seconds")


@dataclass(frozen=True)
class Counts:
    """What a profile's committed results hold, counted once for every page that states it."""

    profile_seeds: tuple[int, ...]       # the seeds rows.yaml asks every training for
    seeds: dict[str, int]                # training -> seeds with a committed result
    trainings: int                       # training result files
    evaluations: int                     # evaluation result files
    evaluations_with_results: int        # evaluations of rows.yaml with at least one result
    evaluations_defined: int             # evaluations rows.yaml runs in this profile

    def seeds_sentence(self) -> str:
        by_count: dict[int, list[str]] = {}
        for training, n in self.seeds.items():
            by_count.setdefault(n, []).append(training)
        parts = [f"{n} seed{'s' * (n != 1)} ({', '.join(names)})"
                 for n, names in sorted(by_count.items(), reverse=True)]
        return (f"rows.yaml asks for seeds {', '.join(map(str, self.profile_seeds))}; the committed results hold "
                + ("; ".join(parts) if parts else "none yet"))


def study_counts(book: Book) -> Counts:
    """Seeds and runs measured in the profile's results folder (from its ``metrics.json`` files)."""
    seeds = {t: len(list((book.results / "train" / t).glob("seed*/metrics.json")))
             for t in book.study.trainings(book.profile)}
    evaluated = {e for e in book.study.evaluations(book.profile)
                 if any((book.results / "eval" / e).glob("seed*/metrics.json"))}
    return Counts(profile_seeds=tuple(book.study.profile(book.profile)["seeds"]),
                  seeds={t: n for t, n in seeds.items() if n},
                  trainings=len(list(book.results.glob("train/*/seed*/metrics.json"))),
                  evaluations=len(list(book.results.glob("eval/*/seed*/metrics.json"))),
                  evaluations_with_results=len(evaluated),
                  evaluations_defined=len(book.study.evaluations(book.profile)))


def run_costs(book: Book) -> pd.DataFrame:
    """Per result: the seconds its notebook ran (papermill's own record in the executed notebook) and,
    for a training, the wall clock its ``metrics.json`` records; the compute the study spent (``seconds``:
    the larger of the two for a training, whose notebook records only its last segment when it resumed)."""
    records = []
    for path in sorted(book.results.glob("*/*/seed*/metrics.json")):
        kind, run, seed = path.parts[-4], path.parts[-3], path.parts[-2]
        notebook = path.with_name("train.ipynb" if kind == "train" else "evaluate.ipynb")
        ran = (json.loads(notebook.read_text())["metadata"].get("papermill", {}).get("duration")
               if notebook.exists() else None)
        metrics = json.loads(path.read_text())
        clock = metrics.get("train_seconds") if kind == "train" else None
        records.append({"result": f"{kind}/{run}", "seed": seed.removeprefix("seed"),
                        "notebook (min)": minutes(ran),
                        "training wall clock (min)": minutes(clock) if kind == "train" else "–",
                        "CPU": cpu_of(metrics), "seconds": max((t for t in (ran, clock) if t is not None), default=None)})
    return pd.DataFrame(records + trunk_costs(book))


def cpu_of(record: dict[str, Any]) -> str:
    """The processor and threads a result ran on, as its ``machine`` records them."""
    machine = record.get("machine")
    return f"{machine['cpu']}, {machine['threads']} thread(s)" if machine else "not recorded"


def trunk_costs(book: Book) -> list[dict[str, Any]]:
    """The shared trunks the profile's trainings start from (``backbones``), with the clock their lever
    recorded: part of what the study cost."""
    spec = book.study.profile_spec(book.profile)
    rows = []
    for name, lever in book.study.definition.levers.items():
        result = book.study.root / "results" / "levers" / f"{name}.json"
        if lever.trunk in spec.backbones.values() and result.exists():
            record = json.loads(result.read_text())
            rows.append({"result": f"trunk/{name}", "seed": "–", "notebook (min)": "–",
                         "training wall clock (min)": minutes(record.get("seconds")), "CPU": cpu_of(record),
                         "seconds": record.get("seconds")})
    return rows


def total_compute(costs: pd.DataFrame) -> str:
    """The whole profile's compute as one sentence: hours of notebook time for trainings and evaluations, and
    the clocks of the shared trunks they start from."""
    if costs.empty:
        return "no runs yet"
    kinds = {kind: costs[costs["result"].str.startswith(f"{kind}/")] for kind in ("trunk", "train", "eval")}
    hours = {kind: rows["seconds"].sum() / 3600 for kind, rows in kinds.items()}
    trunks = (f", {hours['trunk']:.1f} h for {len(kinds['trunk'])} shared trunk(s)" if len(kinds["trunk"]) else "")
    return (f"{sum(hours.values()):.1f} hours of compute: {hours['train']:.1f} h for {len(kinds['train'])} "
            f"trainings, {hours['eval']:.1f} h for {len(kinds['eval'])} evaluations{trunks}")


HH_CONFIG = """hh_config() {  # usage: hh_config train|eval NAME PROFILE
python - "$@" <<'PY'
import sys, yaml
from hhrnet.config import to_dict
from hhrnet.study import Study
kind, name, profile = sys.argv[1:4]
study = Study.load("experiments")
cfg = study.evaluation_config(name, profile) if kind == "eval" else study.training_config(name, profile)
print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
PY
}"""


def papermill_commands(study: Study, profile: str) -> dict[str, list[str]]:
    """Per training of ``profile`` (and ``published`` for the evaluations of published weights): the
    papermill commands that run it and its evaluations by hand from the repository root, as the study
    driver passes them (``checkpoint_dir``, ``training_metrics``, ``diagnostics``), each wrapped one
    parameter a line.  Needs the shell function ``HH_CONFIG``."""
    out = f"runs/{profile}"
    commands: dict[str, list[str]] = {}
    for name in study.trainings(profile):
        synthetic = json.dumps(study.data_spec(profile, name).get("synthetic"))
        commands[name] = [_wrapped(
            f"mkdir -p {out}/train_{name} && papermill experiments/train.ipynb",
            [f"{out}/train_{name}/train.ipynb"], ["--cwd", f"{out}/train_{name}"],
            ["-p", "config_yaml", f'"$(hh_config train {name} {profile})"'],
            ["-p", "checkpoint_dir", f"../{name}"], ["-p", "synthetic_json", shlex.quote(synthetic)],
            ["-p", "out_dir", "."])]
    for name, ev in study.evaluations(profile).items():
        parameters = [["--cwd", f"{out}/eval_{name}"], ["-p", "evaluation", name]]
        if ev.training is not None:
            parameters += [["-p", "checkpoint", f"../{ev.training}/last.pth"],
                           ["-p", "training_metrics", f"../train_{ev.training}/metrics.json"]]
        else:
            parameters += [["-p", "checkpoint", ev.checkpoint], ["-p", "published", "True"]]
        parameters += [["-p", "config_yaml", f'"$(hh_config eval {name} {profile})"'], ["-p", "out_dir", "."]]
        if ev.diagnostics:  # hhrnet.diagnostics, as the study runs it
            parameters.append(["-p", "diagnostics", "True"])
        commands.setdefault(ev.training or "published", []).append(_wrapped(
            f"mkdir -p {out}/eval_{name} && papermill experiments/evaluate.ipynb",
            [f"{out}/eval_{name}/evaluate.ipynb"], *parameters))
    return commands


def labelled_and_predicted(predictor: Any, gt: Any, image_dir: Path, scenes: list[tuple[str, int]]) -> Figure:
    """One column per ``(title, image id)``: the labelled people above, the predictor's below (people
    scoring below ``hhrnet.viz.MIN_SCORE`` left out), so a reader compares them person by person."""
    from hhrnet.data.coco import read_rgb_image
    from hhrnet.viz import draw_poses, found_poses

    kset = predictor.cfg.data.keypoint_set
    fig, axes = plt.subplots(2, len(scenes), figsize=(2.6 * len(scenes), 5.4), squeeze=False)
    for column, (title, image_id) in enumerate(scenes):
        image = read_rgb_image(image_dir / gt.loadImgs(image_id)[0]["file_name"])
        labelled = [a["keypoints"] for a in gt.loadAnns(gt.getAnnIds(imgIds=[image_id])) if a["num_keypoints"]]
        [poses] = predictor.predict([image])
        for row, (people, what) in enumerate([(labelled, "labelled"),
                                              (found_poses(poses.keypoints, poses.scores), "predicted")]):
            axes[row, column].imshow(image)
            draw_poses(axes[row, column], people, kset=kset)
            axes[row, column].set_title(f"{title}: {len(people)} {what}", fontsize=9)
            axes[row, column].axis("off")
    fig.tight_layout()
    return fig


def _wrapped(head: str, *parameters: list[str]) -> str:
    """A shell command with one option a line (backslash continuations), so it fits a phone's width."""
    return " \\\n".join([head, *("    " + " ".join(p) for p in parameters)])


def legible(fig: Figure) -> Figure:
    """Raise every text of ``fig`` to ``MIN_LABEL_PX`` at the width the page shows it at, and give every
    heatmap (a scalar image on a non-negative scale) without one a colour bar."""
    changed = False
    for ax in list(fig.axes):
        for image in ax.get_images():
            if np.ndim(image.get_array()) == 2 and image.colorbar is None and (image.norm.vmin or 0) >= 0:
                fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
                changed = True
    width_in = fig.get_figwidth()
    px_per_in = fig.dpi if fig.get_label() == WIDE else min(fig.dpi, COLUMN_PX / width_in)
    smallest = MIN_LABEL_PX * 72 / px_per_in
    for text in fig.findobj(Text):
        if text.get_text() and text.get_fontsize() < smallest:
            text.set_fontsize(smallest)
            changed = True
    if changed and fig.get_label() != WIDE and fig.get_layout_engine() is None:
        with warnings.catch_warnings():  # axes placed by hand are left where they are
            warnings.simplefilter("ignore")
            fig.tight_layout()
    return fig


def _show_legibly() -> None:
    """Route the notebook's PNG rendering of figures through ``legible`` (no-op outside IPython)."""
    try:
        import matplotlib_inline.backend_inline  # noqa: F401  (its import installs IPython's figure formatter)
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]
    try:
        render = formatter.lookup_by_type(Figure)
    except KeyError:  # figures not shown as PNG in this shell
        return
    if getattr(render, "legible", False):
        return

    def render_legibly(fig: Figure):
        return render(legible(fig))
    render_legibly.legible = True
    formatter.for_type(Figure, render_legibly)


_show_legibly()
