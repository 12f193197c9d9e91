"""hhrnet: HigherHRNet (Cheng et al., CVPR 2020) reproduced as a compact PyTorch package.

The Python API in five cells (the README runs them)::

    import hhrnet
    predictor = hhrnet.Predictor("w32_512", flip_test=False)   # a checkpoint file or a published name
    [poses] = predictor.predict("scene.png")                   # paths, PIL images, RGB/BGR/gray arrays
    poses.plot(image)                                          # the people found, drawn by score
    outputs = predictor.outputs(image)                         # every resolution's heatmaps and tags
    metrics = hhrnet.evaluate(predictor, "data/coco", "val2017")

Names (``dir(hhrnet)``): ``Predictor``, ``Poses``, ``Maps``, ``OutputMaps``, ``load_model``, ``evaluate``
(imported on first use, so ``import hhrnet`` does not pull in OpenCV or pycocotools); ``Config``,
``ModelConfig``, ``TestConfig``, ``preset``; ``KeypointSet``, ``COCO_17``, ``CROWDPOSE_14``,
``keypoint_set``; ``count_parameters``, ``count_flops``; and ``HigherHRNet``, the network (an
``nn.Module``: ``help(hhrnet.HigherHRNet)`` shows it with everything it inherits, so it is left out of
this page).  Drawing helpers live in ``hhrnet.viz``.
"""

from importlib import import_module
from typing import Any

from .config import Config, preset
from .keypoints import COCO_17, CROWDPOSE_14, KeypointSet, keypoint_set
from .model import HigherHRNet, count_flops, count_parameters  # noqa: F401 (HigherHRNet: see __all__)
from .sections import ModelConfig, TestConfig

# Imported on first use, so ``import hhrnet`` does not pull in OpenCV or pycocotools.
_LAZY = {"Predictor": "inference", "load_model": "inference", "Poses": "poses", "Maps": "poses",
         "OutputMaps": "poses", "evaluate": "evaluation"}

# ``HigherHRNet`` is importable (``from hhrnet import HigherHRNet``) and in ``dir``, but not in ``__all__``:
# ``help(hhrnet)`` documents every class of ``__all__`` in full, and the network's page is nn.Module's.
__all__ = ["Predictor", "Poses", "Maps", "OutputMaps", "load_model", "evaluate", "Config", "ModelConfig",
           "TestConfig", "preset", "KeypointSet", "COCO_17", "CROWDPOSE_14", "keypoint_set", "count_parameters",
           "count_flops"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "HigherHRNet"})
