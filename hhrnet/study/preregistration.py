"""Claims written before their results: when each family's ``expect`` last changed, beside its first result.

``git blame`` of the lines of a family's ``expect:`` in rows.yaml names the commit that last changed its
expectations; the earliest ``git_commit`` recorded in the ``metrics.json`` of its evaluations names
the commit of its first result.  An expectation changed after results existed is a claim fitted to
them, and the book says so.  Without the history (a shallow clone, no git) both read "unavailable".
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from .plan import Study

UNCOMMITTED = "0" * 40  # git blame's commit of lines not committed yet


@dataclass(frozen=True)
class Registration:
    """One family: ``expectations`` (commit or None), ``first_result`` (commit or None), and whether the
    expectations changed after it (None: no history, or no result yet)."""

    expectations: str | None
    first_result: str | None
    changed_after_results: bool | None
    history: bool


def _run_git(root: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def _git(root: Path, *args: str) -> str | None:
    """A git command's output, or None when git or the history cannot answer."""
    out = _run_git(root, *args)
    return out.stdout if out is not None and out.returncode == 0 else None


def _is_ancestor(root: Path, older: str, newer: str) -> bool | None:
    """Whether commit ``older`` is in the history of ``newer`` (None: git cannot tell)."""
    out = _run_git(root, "merge-base", "--is-ancestor", older, newer)
    return None if out is None or out.returncode not in (0, 1) else out.returncode == 0


def has_history(root: Path) -> bool:
    """A full git history at ``root`` (a shallow clone cannot tell when lines changed)."""
    return _git(root, "rev-parse", "--is-shallow-repository") == "false\n"


def expect_lines(path: Path) -> dict[str, tuple[int, int]]:
    """Each family's ``expect:`` value in rows.yaml as 1-based ``(first line, last line)``."""
    root = yaml.compose(path.read_text(encoding="utf-8"))
    families = next(v for k, v in root.value if k.value == "families")
    lines = {}
    for key, family in families.value:
        for field, value in family.value:
            if field.value == "expect":
                end = value.end_mark.line + (1 if value.end_mark.column else 0)
                lines[key.value] = (value.start_mark.line + 1, max(end, value.start_mark.line + 1))
    return lines


def _last_change(root: Path, path: Path, span: tuple[int, int]) -> str | None:
    """The newest commit among the blamed lines (``UNCOMMITTED`` when one is not committed)."""
    out = _git(root, "blame", "--porcelain", "-L", f"{span[0]},{span[1]}", "--", str(path))
    if out is None:
        return None
    times, current = {}, None
    for line in out.splitlines():
        head = line.split(" ")[0]
        if len(head) == 40 and all(c in "0123456789abcdef" for c in head):
            current = head
        elif line.startswith("committer-time ") and current:
            times[current] = int(line.split()[1])
    if UNCOMMITTED in times:
        return UNCOMMITTED
    return max(times, key=times.get) if times else None


def _first_result(root: Path, study: Study, profile: str, evaluations: tuple[str, ...]) -> str | None:
    """The earliest commit (by commit time) recorded by a result of these evaluations."""
    commits = set()
    for name in evaluations:
        for path in (study.results_dir(profile) / "eval" / name).glob("seed*/metrics.json"):
            commit = json.loads(path.read_text(encoding="utf-8")).get("git_commit")
            if commit:
                commits.add(commit)
    dated = {c: int(t) for c in commits if (t := (_git(root, "show", "-s", "--format=%ct", c) or "").strip())}
    return min(dated, key=dated.get) if dated else None


def preregistration(study: Study, profile: str) -> dict[str, Registration]:
    """Per family of rows.yaml: when its expectations last changed and when its first result ran."""
    path = study.definition.path
    root = path.parent
    spans = expect_lines(path)
    history = has_history(root)
    found = {}
    for name, family in study.definition.families.items():
        if not history or name not in spans:
            found[name] = Registration(None, None, None, False)
            continue
        changed = _last_change(root, path, spans[name])
        first = _first_result(root, study, profile, family.evaluations)
        if changed is None or first is None:
            after = None
        elif changed == UNCOMMITTED:
            after = True
        else:
            before = _is_ancestor(root, changed, first)
            after = None if before is None else not before
        found[name] = Registration(changed, first, after, changed is not None)
    return found
