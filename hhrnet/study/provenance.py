"""Which code produced a result: the hhrnet sources a run imported, hashed file by file.

A run records them in its ``metrics.json`` (``code``); the result stays current while those files are
unchanged, so editing the CLI, the hub or the study's scheduling does not invalidate hours of training,
while any change to code the run executed does.  An evaluation also records which training result it
read (``training_id``): re-training makes its evaluations stale.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# Modules that only plan, schedule and gather runs: what a run computes is fixed by its stamped
# parameters and the rest of the package.
ORCHESTRATION = frozenset({"cli.py", "study/__init__.py", "study/claims.py", "study/errors.py", "study/plan.py",
                           "study/preregistration.py", "study/provenance.py", "study/results.py", "study/runner.py",
                           "study/schema.py", "study/spec.py"})


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def code_used(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """``{path in the package: hash}`` of every hhrnet source this process imported (orchestration aside)."""
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (name == "hhrnet" or name.startswith("hhrnet.")) and path:
            files.add(Path(path).resolve())
    used = {}
    for path in sorted(files):
        if path.is_relative_to(package_dir) and path.suffix == ".py":
            rel = path.relative_to(package_dir).as_posix()
            if rel not in ORCHESTRATION:
                used[rel] = source_hash(path)
    return used


def code_changes(recorded: Any, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The recorded sources that differ today or are gone; a result without a record counts as changed."""
    if not isinstance(recorded, dict) or not recorded:
        return ["(no record of the code that produced it)"]
    return [rel for rel, digest in sorted(recorded.items())
            if not (package_dir / rel).is_file() or source_hash(package_dir / rel) != digest]


def result_id(metrics: dict[str, Any]) -> str:
    """Identity of a finished run's result: its stamp and the code it ran."""
    record = json.dumps([metrics.get("stamp"), metrics.get("code")], sort_keys=True)
    return hashlib.sha256(record.encode()).hexdigest()[:16]
