"""Published weights by name: downloaded once into a cache folder and verified by their sha256 prefix.

Every place that takes a checkpoint path also takes a name from ``REGISTRY`` (``load_model("w32_512")``,
``--checkpoint w32_512``, ``train.pretrained: hrnet_w32_imagenet``): ``hhrnet.checkpoints`` uses an
existing file first, then a registry name, and otherwise fails listing the names.

Cache folder, first that is set: ``$HHRNET_WEIGHTS``; ``$HHRNET_CACHE/weights`` (beside the study's
``data/`` and ``runs/``); ``$XDG_CACHE_HOME/hhrnet/weights``; ``~/.cache/hhrnet/weights``.
``$HHRNET_WEIGHTS_MIRROR`` replaces everything before the file name in every URL.

A download goes to a temporary file in the cache folder and is renamed to its final name only after
its sha256 starts with the published prefix, so a failed, partial or interrupted download leaves
nothing behind.  Only ``urllib`` is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
TIMEOUT = 60  # seconds without a byte before a download is abandoned

MMPOSE_SOURCE = ("mmpose 0.x model zoo: configs/body/2D_Kpt_SView_RGB_Img/AE/_result/higherhrnet_coco.md "
                 "(README since 2020-07-23); the 8 hex digits are sha256[:8] (OpenMMLab's publish_model)")
IMAGENET_SOURCE = ("ImageNet HRNet of the HRNet pose repositories (models/pytorch/imagenet/), mirrored by mmpose "
                   "as the `pretrained` URL of its HigherHRNet configs; torch.hub-style name, the 8 hex digits "
                   "are taken as sha256[:8]")
OFFICIAL_SOURCE = ("HRNet/HigherHRNet-Human-Pose-Estimation README, model zoo (Google Drive / OneDrive folders, "
                   "no direct file URL)")
OFFICIAL_FOLDER = ("the official model zoo (Google Drive https://drive.google.com/drive/folders/"
                   "1X9-TzWpwbX2zQf2To8lB-ZQHMYviYYh6 or OneDrive https://1drv.ms/f/s!AhIXJn_J-blW4AwKRMklXVzndJT0)")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be had, read or fitted to the model; the message names the file or name.

    Defined here, below ``hhrnet.checkpoints`` (which raises it for files), so that fetching a published
    name and reading a file fail with one error type without the two modules importing each other.
    """


class WeightsError(CheckpointError):
    """Published weights that cannot be fetched or fail their hash check; one line saying what to do."""


@dataclass(frozen=True)
class Weights:
    """One published file: where it is, how to check it, and which hhrnet network it fills."""

    name: str
    filename: str
    layout: str  # mmpose | official | imagenet-hrnet (backbone only, for train.pretrained)
    width: int
    preset: str | None  # hhrnet preset with the same network and input size; None for a backbone
    source: str
    url: str | None = None  # None: no stable direct link, download by hand from `manual`
    sha256: str | None = None  # prefix of the file's sha256 (None: unknown, the strict load is the check)
    manual: str | None = None

    @property
    def is_backbone(self) -> bool:
        return self.layout == "imagenet-hrnet"


def _mmpose(name: str, filename: str, width: int) -> Weights:
    return Weights(name, filename, "mmpose", width, name, MMPOSE_SOURCE,
                   url=f"https://download.openmmlab.com/mmpose/bottom_up/{filename}",
                   sha256=filename.split("-")[-1].split("_")[0])


def _imagenet(width: int, digest: str) -> Weights:
    filename = f"hrnet_w{width}-{digest}.pth"
    return Weights(f"hrnet_w{width}_imagenet", filename, "imagenet-hrnet", width, None, IMAGENET_SOURCE,
                   url=f"https://download.openmmlab.com/mmpose/pretrain_models/{filename}", sha256=digest)


def _official(name: str, width: int, size: int) -> Weights:
    return Weights(f"official_{name}", f"pose_higher_hrnet_w{width}_{size}.pth", "official", width, name,
                   OFFICIAL_SOURCE, manual=OFFICIAL_FOLDER)


REGISTRY: dict[str, Weights] = {w.name: w for w in (
    _mmpose("w32_512", "higher_hrnet32_coco_512x512-8ae85183_20200713.pth", 32),
    _mmpose("w32_640", "higher_hrnet32_coco_640x640-a22fe938_20200712.pth", 32),
    _mmpose("w48_512", "higher_hrnet48_coco_512x512-60fedcbc_20200712.pth", 48),
    _official("w32_512", 32, 512),
    _official("w32_640", 32, 640),
    _official("w48_640", 48, 640),
    _imagenet(32, "36af842e"),
    _imagenet(48, "8ef0771d"),
)}


def cache_root() -> Path:
    """hhrnet's cache folder, the first that is set: ``$HHRNET_CACHE``; ``$XDG_CACHE_HOME/hhrnet``;
    ``~/.cache/hhrnet`` (published weights, unless ``$HHRNET_WEIGHTS``; ``hhrnet.precision``'s measurement)."""
    if os.environ.get("HHRNET_CACHE"):
        return Path(os.environ["HHRNET_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hhrnet"


def weights_dir() -> Path:
    """Where published weights are kept (see the module docstring for the environment variables)."""
    if os.environ.get("HHRNET_WEIGHTS"):
        return Path(os.environ["HHRNET_WEIGHTS"]).expanduser()
    return cache_root() / "weights"


def get(name: str) -> Weights:
    """The registry entry of a name; an unknown name lists the known ones."""
    if name not in REGISTRY:
        raise WeightsError(f"{name!r} is not a published name; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def url_of(entry: Weights) -> str | None:
    """The entry's URL, or the same file name under ``$HHRNET_WEIGHTS_MIRROR``."""
    mirror = os.environ.get("HHRNET_WEIGHTS_MIRROR")
    if entry.url is None or not mirror:
        return entry.url
    return f"{mirror.rstrip('/')}/{entry.filename}"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, progress: bool | None = None) -> Path:
    """The verified local file of a published name, downloaded on first use.

    A file already in the cache is re-hashed (it may have been put there by hand); ``progress=None``
    shows a bar only on a terminal.
    """
    entry = get(name)
    dest = weights_dir() / entry.filename
    if dest.is_file():
        _verify(entry, dest, sha256_of(dest), where=str(dest))
        return dest
    url = url_of(entry)
    if url is None:
        raise WeightsError(f"{name}: no direct download; get {entry.filename} from {entry.manual} and put it "
                           f"at {dest} (or pass the file's path)")
    return download(entry, url, dest, progress)


def _verify(entry: Weights, path: Path, actual: str, where: str) -> None:
    if entry.sha256 and not actual.startswith(entry.sha256):
        hint = f"; delete {path} and retry" if path.exists() else "; nothing was kept"
        raise WeightsError(f"{entry.name}: sha256 of {where} starts with {actual[:len(entry.sha256)]}, expected "
                           f"{entry.sha256}: refused{hint}")


def download(entry: Weights, url: str, dest: Path, progress: bool | None = None) -> Path:
    """Stream ``url`` into a temporary file beside ``dest``, hashing as it goes; rename once verified."""
    from tqdm import tqdm

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        raise WeightsError(f"{entry.name}: cannot write to {dest.parent} ({err.strerror or err}); set "
                           "HHRNET_WEIGHTS to a writable folder") from None
    try:
        digest, received = hashlib.sha256(), 0
        request = urllib.request.Request(url, headers={"User-Agent": "hhrnet"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=entry.filename,
                      disable=None if progress is None else not progress, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise WeightsError(f"{entry.name}: download of {url} stopped after {received} of {total} bytes; "
                               "nothing was kept, retry")
        _verify(entry, dest, digest.hexdigest(), where=url)
        os.replace(tmp, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise WeightsError(f"{entry.name}: cannot download {url} ({type(err).__name__}: {reason}); download it "
                           f"and put it at {dest} (or pass a local file's path)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
