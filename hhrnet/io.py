"""Files in and out, written once: atomic writes, JSON and YAML reading, JSON lines, images, safe folder walks.

Every file hhrnet writes (checkpoints, configs, metrics, summaries, predictions, ONNX, synthetic images)
goes through ``atomic_write``: a temporary file in the same folder, flushed and fsynced, then renamed
over the target, with the mode the user's umask gives a new file (or the mode of the file it replaces).
A crash or a full disk leaves either the old file or the new one, never half of one; the temporary
file is removed on failure, and ``remove_stale_temps`` sweeps those a killed process left behind.

Reading is bounded: YAML nested deeper than ``MAX_NESTING`` levels or whose aliases expand to more
than ``MAX_YAML_VALUES`` values, JSON nested past Python's recursion limit, images whose header claims more than ``MAX_IMAGE_PIXELS`` and
symlink cycles in a folder walk are refused with one line naming the file.  This module imports nothing
of hhrnet, so every layer (``config`` included) may use it.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

TEMP_SUFFIX = ".tmp"
MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused before decoding (memory stays bounded)
MAX_ASPECT_RATIO = 8.0         # the network input grows with the aspect ratio: a 1000:1 strip is refused
MAX_NESTING = 64               # YAML deeper than this is refused (configs and rows.yaml use < 10)
MAX_YAML_VALUES = 100_000      # values a YAML document may expand to through its aliases (rows.yaml: ~5k)
MAX_REPR = 80                  # characters of a value quoted in an error message


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file."""


class WriteError(OSError):
    """A file that could not be written (full disk, size limit, permissions); the message names it."""


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about hostile input."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Atomic writes


def _new_file_mode(path: Path) -> int:
    """The permission bits the target gets: those of the file it replaces, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[Any], None] | bytes | str, mode: str = "wb") -> Path:
    """Write ``path`` through a temporary file in its folder (fsync + rename); returns the path.

    ``write`` is the content (bytes or str) or a function that writes to the open file.  A failure
    (full disk, file-size limit, a writer's own error) leaves the old file whole and raises one
    ``WriteError`` naming ``path``.
    """
    path = Path(path)
    if isinstance(write, str):
        write, mode = write.encode("utf-8"), "wb"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise WriteError(f"{path}: cannot write ({err.strerror or err})") from None
    try:
        os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, mode) as f:
            if isinstance(write, (bytes, bytearray, memoryview)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, WriteError):
            # torch.save reports a full disk as "[enforce fail at inline_container.cc...]": name the file
            detail = err.strerror if isinstance(err, OSError) and err.strerror else _first_line(err)
            raise WriteError(f"{path}: cannot write ({detail}); the previous file, if any, is unchanged") from err
        raise
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1, **kwargs: Any) -> Path:
    """``json.dumps(obj)`` written atomically (NaN refused: it is not JSON)."""
    return atomic_write(path, json.dumps(obj, indent=indent, allow_nan=False, **kwargs) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` written atomically."""
    import torch  # deferred: torch is heavy and most readers of this module never save a tensor

    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def refuse_overlap(outputs: Iterable[str | Path], inputs: Iterable[str | Path], what: str = "output") -> None:
    """Refuse an output that is, or is a folder holding, one of the inputs: an input is never an output."""
    resolved = [(Path(i), Path(i).resolve()) for i in inputs]
    for out in outputs:
        target = Path(out).resolve()
        for given, source in resolved:
            if source == target or target in source.parents:
                holds = "is" if source == target else "holds"
                raise ValueError(f"{what} {out} {holds} the input {given}; choose another {what} "
                                 "(hhrnet never writes over what it reads)")


# --------------------------------------------------------------------------------------------------
# JSON and JSON lines: written strictly (NaN and Infinity are not JSON); nesting past Python's recursion
# limit is an error naming the file, not a RecursionError


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one whole line (a single ``write`` of line + newline, flushed); NaN / Infinity are refused."""
    try:
        line = json.dumps(row, allow_nan=False) + "\n"
    except ValueError:
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        raise ValueError(f"{path}: {', '.join(bad) or 'a value'} is not finite; metrics are strict JSON") from None
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
    except OSError as err:
        raise WriteError(f"{path}: cannot append ({err.strerror or err})") from None


def read_jsonl(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every row of a JSON-lines file; a torn last line (a crash mid-write) is skipped and reported.

    A malformed line anywhere else is an error naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                if warn is not None:
                    warn(f"{path}: skipped a torn last line ({len(line)} characters)")
                break
            raise ValueError(f"{path}: line {i + 1} is not JSON") from None
        except RecursionError:
            raise ValueError(f"{path}: line {i + 1} is nested too deeply") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}: line {i + 1} is not a JSON object")
        rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Replace a JSON-lines file atomically."""
    return atomic_write(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))


def _read_text(path: Path, kind: str, error: type[Exception], missing: str, folder: str | None = None) -> str:
    """The UTF-8 text of ``path``, or one ``error`` naming the file (``missing``; ``folder``, if given)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise error(f"{path}: {missing}") from None
        if folder is not None and isinstance(err, IsADirectoryError):
            raise error(f"{path}: {folder}") from None
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not valid {kind} (not UTF-8 text)") from None


def read_json(path: str | Path, what: str = "JSON file", error: type[Exception] = ValueError) -> Any:
    """``json.load`` with one ``error`` naming the file (missing, unreadable, malformed, nested too deeply)."""
    path = Path(path)
    text = _read_text(path, "JSON", error, f"{what} not found", f"is a folder, not a {what}")
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{path}: not valid JSON (nested too deeply for Python to read)") from None
    except ValueError as err:  # json.JSONDecodeError
        raise error(f"{path}: not valid JSON ({_first_line(err)})") from None


def check_finite_numbers(path: str | Path, values: Mapping[str, Any], keys: Sequence[str]) -> None:
    """Refuse, naming the file and key, a value of ``keys`` that is present but not a finite number
    (``true`` is not 1.0, NaN is not a result); null means "not measured" and passes."""
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: key {key!r} must be a finite number or null, got {short_repr(value)}")


# --------------------------------------------------------------------------------------------------
# YAML: safe types only, no key twice, aliases and nesting bounded


def load_yaml(path: str | Path, error: type[Exception] = ValueError) -> Any:
    """The YAML (or JSON) document in ``path`` with only plain types; every refusal is one ``error``
    naming the file: syntax (with line and column), a key given twice in one mapping (with its line),
    nesting deeper than ``MAX_NESTING``, aliases expanding to more than ``MAX_YAML_VALUES`` values."""
    import yaml  # deferred: PyYAML is only needed by the few readers of YAML files

    path = Path(path)
    text = _read_text(path, "YAML", error, "no such file")
    loader = _bounded_loader(yaml)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), 1, path, error)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise error(f"{where}: YAML syntax error: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({_first_line(err)})") from None
    finally:
        loader.dispose()


def _bounded_loader(yaml: Any) -> type:
    """A ``yaml.SafeLoader`` refusing duplicate keys and nesting deeper than ``MAX_NESTING`` while composing."""

    class BoundedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_NESTING:
                    raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_NESTING} levels",
                                                      self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def compose_mapping_node(self, anchor: Any) -> Any:
            # checked before merge keys (``<<: *anchor``) are expanded, so overriding a merged value stays allowed
            node = super().compose_mapping_node(anchor)
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                if (key.tag, key.value) in seen:
                    raise yaml.composer.ComposerError(None, None, f"key {short_repr(key.value)} appears twice "
                                                      "in one mapping", key.start_mark)
                seen.add((key.tag, key.value))
            return node

    return BoundedLoader


def _expanded_size(node: Any, sizes: dict[int, int], open_nodes: set[int], depth: int, path: Path,
                   error: type[Exception]) -> int:
    """Values ``node`` stands for once every alias is expanded; refuses alias bombs, cycles and depth."""
    if depth > MAX_NESTING:
        raise error(f"{path}: nested deeper than {MAX_NESTING} levels once aliases are expanded")
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        mark = node.start_mark
        raise error(f"{path}:{mark.line + 1}:{mark.column + 1}: an alias refers to the value that holds it")
    open_nodes.add(id(node))
    children = node.value if isinstance(node.value, list) else []
    flat = [part for child in children for part in (child if isinstance(child, tuple) else (child,))]
    size = 1 + sum(_expanded_size(child, sizes, open_nodes, depth + 1, path, error) for child in flat)
    if size > MAX_YAML_VALUES:
        raise error(f"{path}: its aliases expand to more than {MAX_YAML_VALUES} values (an alias bomb?)")
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


# --------------------------------------------------------------------------------------------------
# Folders and glob patterns: every unreadable folder named, symlink cycles followed once


def walk_files(folder: str | Path, suffixes: Iterable[str] | None = None) -> tuple[list[Path], list[str]]:
    """Every file below ``folder`` (symlinks followed, each real folder once), sorted, and one message
    per folder that could not be read or that a symlink led back into (a cycle)."""
    wanted = {s.lower() for s in suffixes} if suffixes is not None else None
    files: list[Path] = []
    problems: list[str] = []
    seen: set[tuple[int, int]] = set()

    def unreadable(err: OSError) -> None:
        problems.append(f"{err.filename}: cannot read folder ({err.strerror or err}); its files were not processed")

    for top, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        try:
            info = os.stat(top)
        except OSError as err:
            unreadable(err)
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:
            problems.append(f"{top}: a symlink leads back to a folder already searched (a cycle); not searched twice")
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs.sort()
        for name in names:
            p = Path(top) / name
            if (wanted is None or p.suffix.lower() in wanted) and p.is_file():
                files.append(p)
    return sorted(files), problems


def glob_files(pattern: str) -> tuple[list[Path], list[str]]:
    """Files matching a glob pattern (``**`` = any folders, as ``glob.glob(recursive=True)``), sorted, with
    ``walk_files``' messages: a symlink cycle is searched once instead of forever."""
    pattern = os.path.expanduser(pattern)
    if "**" not in pattern:
        return sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file()), []
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    found, problems = walk_files(base)
    rest = parts[fixed:]
    matches = [p for p in found if _match_parts(rest, p.relative_to(base).parts)]
    return matches, problems


def _match_parts(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Glob matching one path component at a time; ``**`` spans zero or more folders (hidden ones excluded)."""
    if not pattern:
        return not parts
    head, tail = pattern[0], pattern[1:]
    if head == "**":
        return any(_match_parts(tail, parts[i:]) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match_parts(tail, parts[1:])


# --------------------------------------------------------------------------------------------------
# Images


def image_size(path: Path) -> tuple[int, int] | None:
    """``(height, width)`` from the file header without decoding the pixels (None if Pillow cannot tell).

    Pillow's own decompression-bomb refusal is an ``ImageReadError`` naming the file, never a reason to decode.
    """
    import warnings

    from PIL import Image  # deferred: only image readers need Pillow

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            with Image.open(path) as im:
                w, h = im.size
        return h, w
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: image header claims too many pixels ({_first_line(err)}); "
                             f"hhrnet reads at most {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx") from None
    except (OSError, ValueError, SyntaxError):  # not every format OpenCV reads is known to Pillow; decode decides
        return None


def read_image(path: str | Path, expected_hw: tuple[int, int] | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, max_aspect: float = MAX_ASPECT_RATIO) -> np.ndarray:
    """8-bit RGB ``(H, W, 3)`` from any image OpenCV reads, or one ``ImageReadError`` naming the file.

    ``IMREAD_COLOR`` makes 3 channels and 8 bits; EXIF orientation is ignored as in the official code
    (COCO coordinates refer to the stored pixels).  Empty, corrupt and truncated files, images larger
    than ``max_pixels`` or more elongated than ``max_aspect``, and a size other than ``expected_hw``
    are refused; the size checks read the header first, so a huge image is never decoded.
    """
    import cv2

    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read image ({err.strerror or err})") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file, not an image")
    header = image_size(path)
    if header is not None:
        check_image_size(path, header, max_pixels, max_aspect)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    if data[:2].tobytes() == b"\xff\xd8" and data.tobytes().rfind(b"\xff\xd9") < 0:
        raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker)")
    check_image_size(path, image.shape[:2], max_pixels, max_aspect)
    if expected_hw is not None and image.shape[:2] != tuple(expected_hw):
        raise ImageReadError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but the annotation "
                             f"file says {expected_hw[0]}x{expected_hw[1]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_image_size(path: Path, hw: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS,
                     max_aspect: float = MAX_ASPECT_RATIO) -> None:
    """Refuse an image larger than ``max_pixels`` or more elongated than ``max_aspect`` (one line naming it)."""
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ImageReadError(f"{path}: image has no pixels ({h}x{w})")
    if h * w > max_pixels:
        raise ImageReadError(f"{path}: image is {h}x{w} = {h * w / 1e6:.0f} Mpx, more than the "
                             f"{max_pixels / 1e6:.0f} Mpx hhrnet reads; downscale it first")
    if max(h, w) / min(h, w) > max_aspect:
        raise ImageReadError(f"{path}: image is {h}x{w}, an aspect ratio of {max(h, w) / min(h, w):.0f}:1 "
                             f"(at most {max_aspect:g}:1); crop it into pieces first")
