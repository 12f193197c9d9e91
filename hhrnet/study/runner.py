"""Running the study: stamps, locks, papermill, and what a finished run leaves behind.

A run executes its notebook into a staging folder (``results/<profile>/.staging/<run>``) and is moved
to ``results/<profile>/<run>`` only when the notebook succeeded and wrote a stamped ``metrics.json``;
a failed run leaves no result (its notebook is kept in ``<run>.failed`` for reading).  A run is
skipped when its ``metrics.json`` carries the same *stamp* (a hash of its parameters and notebook), the
``hhrnet`` sources it ran are unchanged, and (an evaluation) it read today's result of its training
(``provenance``).  Each run is locked while it executes, so study processes on one results folder
(``--workers``) never run the same notebook at once: a process skips a run another holds, naming the
holder, and comes back to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..io import remove_stale_temps
from .errors import RunFailed, StudyError, StudyLocked
from .plan import Run, Study
from .provenance import code_changes, result_id
from .results import gather, read_result


def run_stamp(study: Study, run: Run) -> str:
    """Hash of the run's parameters and notebook; the same for any checkout and cache location."""
    parameters = json.dumps(run.parameters, sort_keys=True)
    parameters = parameters.replace(str(study.cache), "$CACHE").replace(str(study.root), "$EXPERIMENTS")
    h = hashlib.sha256(parameters.encode())
    h.update((study.root / run.notebook).read_bytes())
    for path in run.inputs:  # a re-trained trunk makes the trainings that start from it stale
        h.update(Path(path).read_bytes() if Path(path).is_file() else b"missing")
    return h.hexdigest()[:16]


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_status(study: Study, profile: str, run: Run) -> str:
    """``done``, ``stale`` (parameters, notebook, the code it ran or the training it read changed, or
    unreadable) or ``missing``."""
    results = study.results_dir(profile)
    path = results / run.name / "metrics.json"
    if not path.exists():
        return "missing"
    metrics, _ = read_result(path)
    if metrics is None or metrics["stamp"] != run_stamp(study, run) or code_changes(metrics.get("code")):
        return "stale"
    for need in run.needs:
        trained, _ = read_result(results / need / "metrics.json")
        if trained is None or metrics.get("training_id") != result_id(trained):
            return "stale"
    return "done"


STALE = "stale: its parameters, notebook, code or training changed since it ran (the study re-runs it)"


def gather_current(study: Study, profile: str, log: Callable[[str], Any] = print,
                   runs: list[Run] | None = None, keep_stale: bool = False) -> Path:
    """The summary of the results the study keeps: a stale one is named in ``skipped``, never averaged with
    current ones, so a study that runs for days shows only what its present code measured (``runs``: the
    profile's, when the caller has them; ``keep_stale``: ``--missing-only`` keeps them, as asked)."""
    stale = {} if keep_stale else {r.name: STALE for r in (study.runs(profile) if runs is None else runs)
                                   if r.kind == "evaluate" and run_status(study, profile, r) == "stale"}
    return gather(study, profile, log=log, leave_out=stale)


# --------------------------------------------------------------------------------------------------
# Locks: one file per run under results/<profile>/.locks, held with flock (released when a process dies)


@contextmanager
def run_lock(study: Study, profile: str, run: Run) -> Iterator[None]:
    """Hold the lock of ``run``, or raise ``StudyLocked`` naming the process that holds it."""
    folder = study.results_dir(profile) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (run.name.replace("/", "__") + ".lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StudyLocked(f"{run.name} is being run by {holder} (lock {path})", holder) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                f"{' '.join(sys.argv)}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# Running


def select_runs(runs: list[Run], only: Iterable[str] | None) -> list[Run]:
    """Runs whose name contains one of ``only`` (their trainings come along); all without ``only``."""
    if not only:
        return runs
    wanted = {r.name for r in runs if any(o in r.name for o in only)}
    wanted |= {n for r in runs if r.name in wanted for n in r.needs}
    return [r for r in runs if r.name in wanted]


def run_study(experiments_dir: str | Path, profile: str, only: Iterable[str] | None = None, force: bool = False,
              missing_only: bool = False, log: Callable[[str], Any] = print, wait: bool = True) -> Path:
    """Execute every missing or stale run of ``profile`` in order; gather the summary table.

    ``only`` keeps runs whose name contains one of the given strings (their trainings come along).
    ``missing_only`` leaves stale results in place and in the summary (rendering a committed study without
    re-running it).
    A failing notebook stops the study with the run and cell; finished results stay intact.
    """
    study = Study.load(experiments_dir)
    study.profile_spec(profile)
    runs = select_runs(study.runs(profile), only)
    if only and not runs:
        raise StudyError(f"--only {' '.join(only)}: no run of profile {profile!r} matches")
    by_name = {r.name: r for r in runs}
    status = {r.name: ("forced" if force else run_status(study, profile, r)) for r in runs}

    def wanted(name: str) -> bool:
        s = status[name]
        return s == "missing" or (s in ("stale", "forced") and not missing_only)

    todo = {r.name for r in runs if wanted(r.name)}
    todo |= {r.name for r in runs if any(n in todo for n in r.needs)}  # a re-trained network is re-evaluated
    for r in runs:  # an evaluation to run needs its training's checkpoint; re-train when the cache lacks it
        if r.name in todo:
            todo |= {n for n in r.needs if not Path(by_name[n].parameters["checkpoint_dir"], "last.pth").exists()}
    log(f"study {profile}: {len(runs)} runs, {len(todo)} to run "
        f"({sum(s == 'done' for s in status.values())} done, {sum(s == 'stale' for s in status.values())} stale)")
    missing = sorted({p for r in runs if r.name in todo for p in r.inputs if not Path(p).is_file()})
    if missing:
        raise StudyError(f"{missing[0]} is missing: the trainings of profile {profile!r} start from it; "
                         f"`python experiments/levers.py {study.trunk_lever(missing[0])}` trains it")
    if todo:
        ensure_data(study, profile, log, [r for r in runs if r.name in todo])
    run_pending(study, profile, [r for r in runs if r.name in todo], force, wait, log, keep_stale=missing_only)
    return gather_current(study, profile, log=log, keep_stale=missing_only)


def run_workers(experiments_dir: str | Path, profile: str, workers: int, only: Iterable[str] | None = None,
                missing_only: bool = False, log: Callable[[str], Any] = print) -> Path:
    """``workers`` study processes on one profile, the cores split between them (on CPU, two one-thread
    processes train faster than one two-thread process: ``bench/train.py --study``)."""
    study = Study.load(experiments_dir)
    ensure_data(study, profile, log, select_runs(study.runs(profile), only))  # once, before the workers start
    threads = max(1, (os.cpu_count() or 1) // workers)
    command = [sys.executable, "-m", "hhrnet", "study", "--profile", profile, "--experiments", str(study.root)]
    command += ["--only", *only] if only else []
    command += ["--missing-only"] if missing_only else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log(f"study {profile}: {workers} worker processes with {threads} thread(s) each")
    processes = [subprocess.Popen(command, env=env) for _ in range(workers)]
    failed = [i for i, p in enumerate(processes) if p.wait() != 0]
    if failed:
        raise StudyError(f"study {profile}: worker(s) {', '.join(map(str, failed))} of {workers} failed "
                         "(their messages are above); finished results are kept, re-run to continue")
    return gather_current(study, profile, log=log, keep_stale=missing_only)


def run_pending(study: Study, profile: str, pending: list[Run], force: bool, wait: bool,
                log: Callable[[str], Any], poll: float = 5.0, keep_stale: bool = False) -> None:
    """Execute ``pending`` in order, skipping runs another study process holds and coming back to them,
    so several processes (``--workers``) share one profile; an evaluation waits for its training, and the
    summary is gathered again after each evaluation (the book shows what has run, while it runs)."""
    total, finished, announced, every = len(pending), 0, set(), None  # every run of the profile, once needed
    while pending:
        progressed = False
        for run in list(pending):
            if any(n in {p.name for p in pending} for n in run.needs):
                continue  # its training is still to run (here or in another process)
            try:
                with run_lock(study, profile, run):
                    start = time.perf_counter()
                    ran = force or run_status(study, profile, run) != "done"  # another process may have run it
                    if ran:
                        execute(study, profile, run)
            except StudyLocked as err:
                if not wait:
                    raise
                if run.name not in announced:
                    log(f"{run.name}: held by {err.holder}; running others meanwhile")
                    announced.add(run.name)
                continue
            pending.remove(run)
            finished, progressed = finished + 1, True
            log(f"[{finished}/{total}] {run.name}: " + (f"{time.perf_counter() - start:.0f} s" if ran
                                                          else "done by another process"))
            if ran and run.kind == "evaluate":
                every = every or study.runs(profile)
                gather_current(study, profile, log=lambda _: None, runs=every, keep_stale=keep_stale)
            break  # back to the first pending run: keep the order (trainings before their evaluations)
        if pending and not progressed:
            time.sleep(poll)


def ensure_data(study: Study, profile: str, log: Callable[[str], Any] = print, runs: list[Run] | None = None) -> None:
    """Generate (or find cached) every synthetic set ``runs`` read (default: every run of the profile)."""
    for spec in study.data_specs(profile, runs):
        if spec.get("synthetic") is None:
            continue
        root = Path(spec["data_root"])
        start = time.perf_counter()
        generate_synthetic(root, spec["synthetic"])
        log(f"data: {root} ready ({time.perf_counter() - start:.1f} s)")


def generate_synthetic(root: str | Path, syn: dict[str, Any]) -> None:
    """Generate (or find cached) a profile's synthetic set: sizes and seed, plus ``scene`` knobs and the
    ``keypoints`` set (COCO's by default; ``crowdpose`` writes CrowdPose-format crowds with crowdIndex)."""
    from ..data.synthetic import SyntheticConfig, generate  # defers cv2 (hhrnet.data loads it)

    scene = {k: tuple(v) if isinstance(v, list) else v for k, v in syn.get("scene", {}).items()}
    try:
        config = SyntheticConfig(**scene)
    except (TypeError, ValueError) as err:
        raise StudyError(f"data.synthetic.scene in experiments/rows.yaml: {err}") from None
    generate(out_dir=root, n_train=syn["train"], n_val=syn["val"], size=syn["size"], seed=syn["seed"],
             config=config, keypoints=syn.get("keypoints") or "coco")


def execute(study: Study, profile: str, run: Run) -> None:
    """Run one notebook with papermill in a staging folder; publish it only if it finished and is stamped."""
    import papermill as pm

    results = study.results_dir(profile)
    final, staging, failed = results / run.name, results / ".staging" / run.name, results / f"{run.name}.failed"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stamp = run_stamp(study, run)
    params = {**run.parameters, "out_dir": str(staging), "stamp": stamp,
              "git_commit": git_commit(study.root) or "unknown"}
    try:
        pm.execute_notebook(str(study.root / run.notebook), str(staging / run.notebook), parameters=params,
                            cwd=str(staging), progress_bar=False, kernel_name="python3")
        metrics, reason = read_result(staging / "metrics.json")
        if metrics is None or metrics["stamp"] != stamp:
            raise RunFailed(f"{run.name} finished without a stamped metrics.json ({reason or 'wrong stamp'}); "
                            f"see {failed / run.notebook}")
    except BaseException as err:
        shutil.rmtree(failed, ignore_errors=True)
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, failed)
        if isinstance(err, pm.PapermillExecutionError):
            raise RunFailed(f"{run.name} failed in cell {err.exec_count} ({err.ename}: {err.evalue}); "
                            f"see {failed / run.notebook}") from None
        raise
    publish(staging, final)
    shutil.rmtree(failed, ignore_errors=True)


def publish(staging: Path, final: Path) -> None:
    """Put a finished run in place of the previous one (rename the old one aside, rename in, delete)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    remove_stale_temps(final)
