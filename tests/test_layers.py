"""One-way layers: ``lint-imports`` keeps the ``[tool.importlinter]`` contracts of pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on this checkout's ``hhrnet`` (not an installed copy), without a cache folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract bites: a package whose bottom layer imports its top is refused, naming the import."""
    package = tmp_path / "hhrnet"
    (package / "study").mkdir(parents=True)
    names = ["__main__", "cli", "pretrain", "engine", "diagnostics", "failures", "predict", "inference", "stats",
             "evaluation", "poses", "grouping", "_refine_tiles", "trained_on", "viz", "data", "rundir", "checkpoints", "model",
             "losses", "averaging", "images", "precision", "io", "hub", "targets", "config"]
    for name in names:
        (package / f"{name}.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "keypoints.py").write_text("from hhrnet import cli\n")
    for name in ("__init__", "notebook", "levers", "runner", "results", "preregistration", "plan", "spec", "errors",
                 "provenance", "claims"):
        (package / "study" / f"{name}.py").write_text("")
    config = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    config.write_text(text[text.index("\n[tool.importlinter]\n"):])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache", str(config)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "hhrnet.keypoints is not allowed to import hhrnet.cli" in result.stdout
