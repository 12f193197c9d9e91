"""How an entry of ``experiments/rows.yaml`` is checked: a ``Schema`` (key -> value checker, required) per kind
of entry, read by ``entry_fields``.

Each value checker returns the converted value or raises ``ValueError("expected ...")``; ``entry_fields``
turns that, an unknown key or a missing one into one ``SpecError`` naming the entry and the key.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ..config import TEST_SIZE_MULTIPLE, preset_names
from ..keypoints import registered
from .errors import SpecError


def string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a non-empty string")
    return v


def number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError("expected a number > 0")
    return float(v)


def integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("expected an integer >= 0")
    return v


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def mapping(v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise ValueError("expected a mapping of dotted config keys to values")
    return dict(v)


def list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def check(v: Any) -> tuple:
        if not isinstance(v, list):
            raise ValueError("expected a list")
        return tuple(item(x) for x in v)
    return check


def sizes(v: Any) -> dict[int, int]:
    if not isinstance(v, Mapping) or not all(isinstance(k, int) and isinstance(x, int) and not isinstance(x, bool)
                                             for k, x in v.items()):
        raise ValueError("expected a mapping of published input sizes to sizes")
    bad = [x for x in v.values() if x < TEST_SIZE_MULTIPLE or x % TEST_SIZE_MULTIPLE]
    if bad:
        raise ValueError(f"sizes must be positive multiples of {TEST_SIZE_MULTIPLE} (the sizes the test resize "
                         f"keeps), not {bad[0]}")
    return dict(v)


def backbones(v: Any) -> dict[int, str]:
    if not isinstance(v, Mapping) or not all(isinstance(k, int) and isinstance(x, str) for k, x in v.items()):
        raise ValueError("expected a mapping of preset widths to backbones (an ImageNet name of hhrnet.hub, or "
                         "a lever's trunk file)")
    return dict(v)


def preset_name(v: Any) -> str:
    if v not in preset_names():
        raise ValueError(f"expected a preset ({', '.join(preset_names())})")
    return v


def keypoint_set_name(v: Any) -> str:
    if v not in registered():
        raise ValueError(f"expected a keypoint set ({', '.join(registered())})")
    return v


def changes_by_profile(v: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(v, Mapping) or not all(isinstance(k, str) for k in v):
        raise ValueError("expected a mapping of profile names to config changes")
    return {k: mapping(x) for k, x in v.items()}


Schema = Mapping[str, tuple[Callable[[Any], Any], bool]]  # key -> (checker, required)


def entry_fields(entry: Any, schema: Schema, where: str) -> dict[str, Any]:
    """Check one entry against its schema: unknown keys, missing keys, wrong types, each named."""
    if not isinstance(entry, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = [k for k in entry if k not in schema]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(schema)})")
    out = {}
    for key, (check, required) in schema.items():
        if key not in entry:
            if required:
                raise SpecError(f"{where}: missing key {key!r}")
            continue
        try:
            out[key] = check(entry[key])
        except ValueError as err:
            raise SpecError(f"{where}.{key}: {err}, got {entry[key]!r}") from None
    return out
