"""Shared test fixtures: where the goldens live and how golden file sets are discovered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
COCO_MINI = SHARED / "data" / "coco_mini"


def goldens_dir() -> Path:
    """``$HHRNET_GOLDENS`` or ``../shared/goldens`` beside the repository."""
    return Path(os.environ.get("HHRNET_GOLDENS", SHARED / "goldens")).resolve()


def golden_files(pattern: str) -> list[Path]:
    """Every golden file matching ``pattern``; a set dropped into the folder later is tested too."""
    found = sorted(goldens_dir().glob(pattern))
    if not found:
        raise FileNotFoundError(f"no golden file matches {pattern!r} in {goldens_dir()} (set HHRNET_GOLDENS)")
    return found


def golden_params(pattern: str) -> list:
    """``pytest.mark.parametrize`` values, one per golden file, with the file name as test id."""
    return [pytest.param(p, id=p.name) for p in golden_files(pattern)]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """coco_mini's val2017 part in the ``ROOT/images/<split>`` + ``ROOT/annotations`` layout (split ``val``)."""
    root = tmp_path_factory.mktemp("coco_mini_layout")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    os.symlink(COCO_MINI / "images", root / "images" / "val")
    os.symlink(COCO_MINI / "person_keypoints_val2017.json", root / "annotations" / "person_keypoints_val.json")
    return root
