"""hhrnet: HigherHRNet (Cheng et al., CVPR 2020) reproduced as a compact PyTorch package.

The one-cell API::

    import hhrnet
    predictor = hhrnet.Predictor("w32_512")              # a checkpoint file or a published name
    poses = predictor.predict(images)                    # RGB uint8 arrays -> people per image
    maps = predictor.maps(images)                        # aggregated heatmaps and tags, before grouping
    metrics = hhrnet.evaluate(predictor, "data/coco", "val2017")
"""

from importlib import import_module
from typing import Any

from .config import Config, ModelConfig, preset
from .keypoints import COCO_17, CROWDPOSE_14, KeypointSet, keypoint_set
from .model import HigherHRNet, count_flops, count_parameters

# Imported on first use, so ``import hhrnet`` does not pull in OpenCV or pycocotools.
_LAZY = {"Predictor": "inference", "Poses": "inference", "Maps": "inference", "load_model": "inference",
         "evaluate": "evaluation"}

__all__ = ["Config", "ModelConfig", "HigherHRNet", "preset", "count_parameters", "count_flops", "KeypointSet",
           "COCO_17", "CROWDPOSE_14", "keypoint_set", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
