"""The study driver: expand ``experiments/rows.yaml`` for a profile and run what is missing or stale.

A *training* run executes ``experiments/train.ipynb`` and leaves a checkpoint in the cache; an
*evaluation* run executes ``experiments/evaluate.ipynb`` on that checkpoint.  Both write
``experiments/results/<profile>/<run>/`` (``metrics.json``, the executed notebook, figures).  A run
is skipped when its ``metrics.json`` carries the same *stamp*: a hash of its parameters, its
notebook and the ``hhrnet`` sources.  Everything the study needs to scale a published
configuration down to a CPU profile lives here and in ``rows.yaml``; the notebooks hold little code.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .config import Config, ConfigError, preset, to_dict

# COCO rows carry AP_M / AP_L (area), CrowdPose rows AP_easy / AP_medium / AP_hard (crowd index)
METRIC_KEYS = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AP_easy", "AP_medium", "AP_hard")


class StudyError(RuntimeError):
    """A study definition that cannot be expanded, or a run that failed (named with its cell)."""


@dataclass(frozen=True)
class Run:
    """One notebook execution: a training or an evaluation, for one seed."""

    name: str                     # e.g. "train/w32_512/seed0" or "eval/w32_512_ms/seed0"
    kind: str                     # "train" | "evaluate"
    parameters: dict[str, Any]    # papermill parameters (plain values only)
    needs: tuple[str, ...] = ()   # runs whose checkpoint this one reads

    @property
    def notebook(self) -> str:
        return f"{self.kind}.ipynb"


@dataclass
class Study:
    """``rows.yaml`` read and checked, with the experiments folder it lives in."""

    root: Path
    spec: dict[str, Any]
    cache: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cache = Path(os.environ.get("HHRNET_CACHE", self.root / "cache"))

    @classmethod
    def load(cls, experiments_dir: str | Path = "experiments") -> "Study":
        root = Path(experiments_dir).resolve()
        path = root / "rows.yaml"
        if not path.is_file():
            raise StudyError(f"{path}: no study definition (rows.yaml) in {root}")
        spec = yaml.safe_load(path.read_text())
        for key in ("trainings", "evaluations", "families", "profiles", "published"):
            if key not in spec:
                raise StudyError(f"{path}: missing top-level key {key!r}")
        for name, ev in spec["evaluations"].items():
            if ev["training"] not in spec["trainings"]:
                raise StudyError(f"{path}: evaluation {name!r} names unknown training {ev['training']!r}")
        for fam, family in spec["families"].items():
            unknown = [e for e in family["evaluations"] if e not in spec["evaluations"]]
            try:
                expected = [Expectation.parse(text) for text in family.get("expect", [])]
            except ValueError as err:
                raise StudyError(f"{path}: family {fam!r}: {err}") from None
            unknown += [name for e in expected for name in (e.a, e.b) if name not in spec["evaluations"]]
            if unknown:
                raise StudyError(f"{path}: family {fam!r} names unknown evaluations {unknown}")
        return cls(root, spec)

    def profile(self, name: str) -> dict[str, Any]:
        if name not in self.spec["profiles"]:
            raise StudyError(f"unknown profile {name!r}; choose one of {', '.join(self.spec['profiles'])}")
        return self.spec["profiles"][name]

    def results_dir(self, profile: str) -> Path:
        return self.root / "results" / profile

    # ----------------------------------------------------------------------------------------------
    # From rows.yaml to configurations

    def training_config(self, training: str, profile: str, seed: int = 0) -> Config:
        """The configuration of a training in a profile: preset → row changes → profile scaling."""
        spec, prof = self.spec["trainings"][training], self.profile(profile)
        cfg = preset(spec["preset"]).override(**spec.get("changes", {}))
        base = preset(spec["preset"])
        width = max(1, round(base.model.width * prof["width"]))
        size = self.input_size(cfg.input_size, profile)
        scaled = {"name": f"{training}@{profile}", "model.width": width, "input_size": size,
                  "train.seed": seed, **prof.get("changes", {})}
        data = self.data_spec(profile)
        scaled.update({f"train.{k}": v for k, v in data.items() if k in ("data_root", "train_split", "val_split")})
        try:
            return cfg.override(**scaled)
        except ConfigError as err:
            raise StudyError(f"training {training!r} in profile {profile!r}: {err}") from None

    def evaluation_config(self, evaluation: str, profile: str, seed: int = 0) -> Config:
        ev = self.spec["evaluations"][evaluation]
        return self.training_config(ev["training"], profile, seed).override(**ev.get("test", {}))

    def input_size(self, published: int, profile: str) -> int:
        """A published input size in a profile: its ``input_sizes`` entry, or the size itself.

        CPU profiles list their sizes explicitly: the test resize rounds an input up to a multiple of
        64, so a scaled size that is not one (640 × 0.25 = 160) would be tested at another size.
        """
        sizes = self.profile(profile).get("input_sizes")
        if sizes is None:
            return published
        if published not in sizes:
            raise StudyError(f"profile {profile!r}: input_sizes has no entry for the published size {published}")
        size = int(sizes[published])
        if size % 64:
            raise StudyError(f"profile {profile!r}: input_sizes[{published}] = {size} is not a multiple of 64, "
                             f"the size the test resize keeps")
        return size

    def data_spec(self, profile: str) -> dict[str, Any]:
        """Where a profile's data lives: the synthetic set (generated on demand) or COCO at a path."""
        data = self.profile(profile)["data"]
        if "synthetic" in data:
            syn = data["synthetic"]
            # the keypoint set joins the scene knobs in the folder's hash only when it is not COCO's, so the
            # cached COCO sets keep their names
            knobs = {**syn.get("scene", {}), **({"keypoints": syn["keypoints"]} if "keypoints" in syn else {})}
            scene = hashlib.sha1(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:8]
            root = self.cache / "data" / f"synthetic_{syn['size']}_{syn['train']}_{syn['val']}_seed{syn['seed']}_{scene}"
            return {"data_root": str(root), "train_split": "train", "val_split": "val", "synthetic": syn}
        coco = data["coco"]
        return {"data_root": coco["root"], "train_split": coco["train_split"], "val_split": coco["val_split"]}

    def seeds_for(self, training: str, profile: str) -> list[int]:
        """Every training of a profile runs with all its seeds, so each family compares like with like."""
        return list(self.profile(profile)["seeds"])

    def runs(self, profile: str) -> list[Run]:
        """Every run of a profile, trainings before the evaluations that read them."""
        trainings, evaluations = [], []
        checkpoints = self.cache / "runs" / profile
        for name in self.spec["trainings"]:
            for seed in self.seeds_for(name, profile):
                cfg = self.training_config(name, profile, seed)
                trainings.append(Run(f"train/{name}/seed{seed}", "train", {
                    "config_yaml": yaml.safe_dump(to_dict(cfg), sort_keys=False),
                    "checkpoint_dir": str(checkpoints / name / f"seed{seed}"),
                    "synthetic_json": json.dumps(self.data_spec(profile).get("synthetic")),
                }))
        for name, ev in self.spec["evaluations"].items():
            for seed in self.seeds_for(ev["training"], profile):
                cfg = self.evaluation_config(name, profile, seed)
                evaluations.append(Run(f"eval/{name}/seed{seed}", "evaluate", {
                    "config_yaml": yaml.safe_dump(to_dict(cfg), sort_keys=False),
                    "checkpoint": str(checkpoints / ev["training"] / f"seed{seed}" / "last.pth"),
                    "training_metrics": str(self.results_dir(profile) / "train" / ev["training"] / f"seed{seed}" / "metrics.json"),
                    "evaluation": name,
                }, needs=(f"train/{ev['training']}/seed{seed}",)))
        return trainings + evaluations


# --------------------------------------------------------------------------------------------------
# Staleness


def code_version(package_dir: Path | None = None) -> str:
    """Hash of the hhrnet sources: results computed by other code are stale."""
    package_dir = package_dir or Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def run_stamp(study: Study, run: Run, code: str) -> str:
    h = hashlib.sha256(json.dumps(run.parameters, sort_keys=True).encode())
    h.update((study.root / run.notebook).read_bytes())
    h.update(code.encode())
    return h.hexdigest()[:16]


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_status(study: Study, profile: str, run: Run, code: str) -> str:
    """``done`` (same stamp), ``stale`` (parameters, notebook or code changed) or ``missing``."""
    metrics = study.results_dir(profile) / run.name / "metrics.json"
    if not metrics.exists():
        return "missing"
    stamp = json.loads(metrics.read_text()).get("stamp")
    return "done" if stamp == run_stamp(study, run, code) else "stale"


# --------------------------------------------------------------------------------------------------
# Running


def run_study(experiments_dir: str | Path, profile: str, only: Iterable[str] | None = None, force: bool = False,
              missing_only: bool = False, log=print) -> Path:
    """Execute every missing or stale run of ``profile`` in order; gather the summary table.

    ``only`` keeps runs whose name contains one of the given strings (their trainings come along).
    ``missing_only`` leaves stale results in place (rendering a committed study without re-running it).
    A failing notebook stops the study with the run and cell; finished results stay intact.
    """
    study = Study.load(experiments_dir)
    code = code_version()
    runs = study.runs(profile)
    if only:
        wanted = {r.name for r in runs if any(o in r.name for o in only)}
        wanted |= {n for r in runs if r.name in wanted for n in r.needs}
        runs = [r for r in runs if r.name in wanted]
    status = {r.name: ("forced" if force else run_status(study, profile, r, code)) for r in runs}
    todo = {r.name for r in runs if status[r.name] == "missing" or (status[r.name] in ("stale", "forced") and not missing_only)}
    # An evaluation to run needs its training's checkpoint; re-train when the cache lacks it.
    for r in runs:
        if r.name in todo:
            for need in r.needs:
                if not Path(next(x for x in runs if x.name == need).parameters["checkpoint_dir"], "last.pth").exists():
                    todo.add(need)
    log(f"study {profile}: {len(runs)} runs, {len(todo)} to run "
        f"({sum(s == 'done' for s in status.values())} done, {sum(s == 'stale' for s in status.values())} stale)")
    ensure_data(study, profile, log)
    for i, run in enumerate(r for r in runs if r.name in todo):
        start = time.perf_counter()
        execute(study, profile, run, code)
        log(f"[{i + 1}/{len(todo)}] {run.name}: {time.perf_counter() - start:.0f} s")
    return gather(study, profile)


def ensure_data(study: Study, profile: str, log=print) -> None:
    syn = study.data_spec(profile).get("synthetic")
    if syn is None:
        return
    root = Path(study.data_spec(profile)["data_root"])
    start = time.perf_counter()
    generate_synthetic(root, syn)
    log(f"data: {root} ready ({time.perf_counter() - start:.1f} s)")


def generate_synthetic(root: str | Path, syn: dict[str, Any]) -> None:
    """Generate (or find cached) a profile's synthetic set: sizes and seed, plus ``scene`` knobs and the
    ``keypoints`` set (COCO's by default; ``crowdpose`` writes CrowdPose-format crowds)."""
    from .data.synthetic import SyntheticConfig, generate

    scene = {k: tuple(v) if isinstance(v, list) else v for k, v in syn.get("scene", {}).items()}
    try:
        config = SyntheticConfig(**scene)
    except (TypeError, ValueError) as err:
        raise StudyError(f"data.synthetic.scene in experiments/rows.yaml: {err}") from None
    generate(out_dir=root, n_train=syn["train"], n_val=syn["val"], size=syn["size"], seed=syn["seed"],
             config=config, keypoints=syn.get("keypoints", "coco"))


def execute(study: Study, profile: str, run: Run, code: str) -> None:
    """Run one notebook with papermill into its results folder (cwd = that folder)."""
    import papermill as pm

    out_dir = study.results_dir(profile) / run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**run.parameters, "out_dir": str(out_dir), "stamp": run_stamp(study, run, code),
              "code_version": code, "git_commit": git_commit(study.root) or "unknown"}
    (out_dir / "metrics.json").unlink(missing_ok=True)  # a failed re-run must not look done
    try:
        pm.execute_notebook(str(study.root / run.notebook), str(out_dir / run.notebook), parameters=params,
                            cwd=str(out_dir), progress_bar=False, kernel_name="python3")
    except pm.PapermillExecutionError as err:
        raise StudyError(f"{run.name} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
                         f"see {out_dir / run.notebook}") from None


# --------------------------------------------------------------------------------------------------
# What the notebooks call: one training, one evaluation, each ending in an atomic metrics.json


def config_from_yaml(config_yaml: str) -> Config:
    from .config import from_dict

    return from_dict(yaml.safe_load(config_yaml))


def write_metrics(out_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """``metrics.json`` written last and atomically: its presence means the run finished."""
    path = Path(out_dir) / "metrics.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=1, default=float))
    os.replace(tmp, path)
    return path


def model_size(cfg: Config) -> dict[str, Any]:
    from .model import HigherHRNet, count_flops, count_parameters

    model = HigherHRNet(cfg.model)
    return {"parameters": count_parameters(model),
            "gflops": count_flops(model, (cfg.input_size, cfg.input_size)) / 1e9}


def train_for_study(cfg: Config, checkpoint_dir: str | Path, synthetic: dict[str, Any] | None) -> dict[str, Any]:
    """Generate the data if needed, train (resuming an interrupted run), and summarise the training."""
    from .engine import CHECKPOINT, read_metrics, train

    if synthetic is not None:
        generate_synthetic(cfg.train.data_root, synthetic)
    checkpoint_dir = Path(checkpoint_dir)
    resume = (checkpoint_dir / CHECKPOINT).exists()
    start = time.perf_counter()
    try:
        train(cfg, checkpoint_dir, resume=resume, progress=False)
    except Exception as err:
        if not resume or "different config" not in str(err):
            raise
        train(cfg, checkpoint_dir, resume=False, progress=False)  # a stale checkpoint of another config
    seconds = time.perf_counter() - start
    log = read_metrics(checkpoint_dir)
    rates = [r["images_per_s"] for r in log if "images_per_s" in r]
    return {**model_size(cfg), "train_seconds": seconds, "iterations": log[-1]["iter"] if log else 0,
            "train_images_per_s": statistics.median(rates) if rates else None,
            "final_loss": log[-1]["total"] if log else None, "seed": cfg.train.seed, "log": log}


def evaluate_for_study(cfg: Config, checkpoint: str | Path, out_dir: str | Path) -> tuple[dict[str, Any], Any]:
    """Keypoint AP of a trained checkpoint on the validation split, with the test settings of ``cfg`` (the
    protocol of its keypoint set: COCO's, or CrowdPose's with AP_easy / AP_medium / AP_hard)."""
    from .checkpoints import load_model
    from .inference import Predictor, evaluate_dataset

    model, trained = load_model(checkpoint)
    if trained.model != cfg.model:
        raise StudyError(f"{checkpoint}: trained network differs from the evaluation's config; re-run its training")
    predictor = Predictor(model, cfg, cfg.test)
    metrics = evaluate_dataset(predictor, root=cfg.train.data_root, split=cfg.train.val_split, out_dir=out_dir,
                               progress=False)
    return metrics, predictor


# --------------------------------------------------------------------------------------------------
# Gathering


def gather(study: Study, profile: str) -> Path:
    """``summary.csv`` / ``summary.json``: one row per evaluation (mean ± std over seeds)."""
    results = study.results_dir(profile)
    rows = []
    for name, ev in study.spec["evaluations"].items():
        per_seed = []
        for seed in study.seeds_for(ev["training"], profile):
            path = results / "eval" / name / f"seed{seed}" / "metrics.json"
            if path.exists():
                per_seed.append(json.loads(path.read_text()))
        if not per_seed:
            continue
        row: dict[str, Any] = {"evaluation": name, "training": ev["training"], "seeds": len(per_seed)}
        for key in METRIC_KEYS:
            values = [m[key] for m in per_seed if key in m]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        first = per_seed[0]
        for key in ("parameters", "gflops", "train_seconds", "train_images_per_s", "seconds_per_image"):
            row[key] = first.get(key)
        rows.append(row)
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text(json.dumps({"profile": profile, "rows": rows}, indent=1))
    target = results / "summary.csv"
    if rows:
        with target.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return target


# --------------------------------------------------------------------------------------------------
# Claims -> verdicts (the ablations page and the study's closing table)

NOISE_TOLERANCE = 0.005  # half an AP point: a smaller difference is noise even with a single seed


@dataclass(frozen=True)
class Expectation:
    """One comparison a claim implies: ``a > b`` (higher AP), ``a ≥ b`` (not lower beyond noise), ``a ≈ b``."""

    a: str
    op: str
    b: str

    @classmethod
    def parse(cls, text: str) -> "Expectation":
        parts = text.split()
        if len(parts) != 3 or parts[1] not in (">", "≥", "≈"):
            raise ValueError(f"expectation {text!r} is not 'evaluation >|≥|≈ evaluation'")
        return cls(*parts)

    def check(self, rows: dict[str, dict[str, Any]], tolerance: float = NOISE_TOLERANCE) -> dict[str, Any]:
        """The measured AP difference, whether it holds, and whether it is within noise.

        Noise is the larger of ``tolerance`` and twice the seeds' standard deviation of either row.
        """
        ra, rb = rows.get(self.a), rows.get(self.b)
        text = f"{self.a} {self.op} {self.b}"
        if not ra or not rb or ra.get("AP") is None or rb.get("AP") is None:
            return {"comparison": text, "ΔAP": None, "holds": None, "within noise": None, "both zero": None}
        diff = ra["AP"] - rb["AP"]
        noise = max(tolerance, 2 * max(ra.get("AP_std") or 0, rb.get("AP_std") or 0))
        holds = {">": diff > 0, "≥": diff > -noise, "≈": abs(diff) <= noise}[self.op]
        return {"comparison": text, "ΔAP": round(100 * diff, 2), "holds": bool(holds),
                "within noise": abs(diff) <= noise, "both zero": ra["AP"] == 0 and rb["AP"] == 0}


def verdict(checks: list[dict[str, Any]]) -> str:
    """A family's verdict from its checked expectations (see the ablations chapter for the rules)."""
    measured = [c for c in checks if c["holds"] is not None]
    if not measured:
        return "not measured in this profile"
    if all(c["both zero"] for c in measured):
        return "inconclusive: AP is zero for every row (the networks are not trained enough to find people)"
    ops = [c["comparison"].split()[1] for c in measured]
    if ">" in ops and all(c["within noise"] for c in measured):
        return "inconclusive: every difference is within noise"  # "≥"/"≈" alone are met by noise
    held = sum(c["holds"] for c in measured)
    noisy = sum(c["within noise"] for c, op in zip(measured, ops) if op != "≈")
    note = f" ({noisy} of {len(measured)} differences within noise)" if noisy else ""
    if held == len(measured):
        return "reproduces in direction" + note
    return ("partly reproduces" if held else "does not reproduce at this scale") + note


def summary_rows(study: Study, profile: str) -> dict[str, dict[str, Any]]:
    """The gathered ``summary.json`` of a profile, by evaluation name (empty before any run)."""
    path = study.results_dir(profile) / "summary.json"
    return {r["evaluation"]: r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}


def family_verdicts(study: Study, profile: str) -> dict[str, tuple[list[dict[str, Any]], str]]:
    """``{family: (checked expectations, verdict)}`` for every family of ``rows.yaml``."""
    rows = summary_rows(study, profile)
    result = {}
    for name, family in study.spec["families"].items():
        checks = [Expectation.parse(text).check(rows) for text in family.get("expect", [])]
        result[name] = (checks, verdict(checks))
    return result


def main(argv: list[str] | None = None) -> int:
    """``experiments/run.py`` and ``python -m hhrnet study`` share this entry point."""
    import argparse

    parser = argparse.ArgumentParser(prog="hhrnet study", description="Run the HigherHRNet study with papermill")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--experiments", default="experiments", help="folder holding rows.yaml and the notebooks")
    parser.add_argument("--only", nargs="*", help="runs whose name contains any of these strings")
    parser.add_argument("--force", action="store_true", help="re-run even up-to-date runs")
    parser.add_argument("--missing-only", action="store_true", help="keep stale results, run only missing ones")
    args = parser.parse_args(argv)
    try:
        summary = run_study(args.experiments, args.profile, args.only, args.force, args.missing_only)
    except (StudyError, ConfigError) as err:
        print(f"study: error: {err}", file=sys.stderr)
        return 1
    print(f"summary: {summary}")
    return 0
