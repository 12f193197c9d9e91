"""Data: COCO-format keypoint datasets (``coco``), augmentation and test-time geometry (``transforms``)."""

from hhrnet.data.coco import CocoKeypoints, DatasetError, coco_paths, read_rgb_image

__all__ = ["CocoKeypoints", "DatasetError", "coco_paths", "read_rgb_image"]
