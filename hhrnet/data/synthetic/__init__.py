"""Procedural, scale-varied multi-person scenes written out as an ordinary COCO keypoints dataset.

Why: COCO cannot be downloaded here and a CPU cannot train on it, yet every HigherHRNet row must be
trained and scored with the real COCO metric.  HigherHRNet's claim is about *scale variation*, so the
people here range from a few percent of the image height to larger than the image (log-uniform), and
the dataset is written exactly as COCO is, so every downstream line is what COCO users run.

How a scene is made (three pure steps):

1. ``sample_scene(rng, ...)`` -> :class:`Scene`: a 3-D stick body with volume per person (yawed to face
   front, back, profile or anything between, random joint angles, proportions, clothes, textures),
   projected orthographically to 2-D drawing primitives (tapered capsules, ellipses, trapezoids) sorted
   back to front, plus the keypoints of a keypoint set (COCO's 17 by default, or CrowdPose's 14 with
   head top and neck: ``generate(keypoints="crowdpose")`` also writes each image's ``crowdIndex``),
   occluders, a background and sensor noise.  Left and right are decidable the way they are for real
   people: the face (eyes, nose, mouth) shows only when the head faces the camera, feet point forward,
   and the far-side limbs are painted behind the torso.
2. ``render_scene(scene)`` -> :class:`Render`: coverage from signed distances evaluated at pixel centres
   with numpy, so the rasterizer is mirror-exact by construction.
3. ``annotate_scene(scene, render)`` -> COCO annotations: ``v=2`` when the joint's own body part is the
   top-most surface at the joint's pixel, ``v=1`` when covered (by another person, an occluder, or the
   person's own torso/head), ``v=0`` with ``x=y=0`` outside the image.  ``area`` and ``bbox`` come from
   the visible (modal) silhouette, like COCO's.

Coordinate convention (the one COCO and the reference HigherHRNet code use): a keypoint ``(x, y)`` is in
*pixel-index* coordinates, pixel ``(i, j)`` has its centre at ``x = j, y = i``, so a horizontal flip maps
``x -> W - 1 - x`` (exactly what ``hhrnet.data.transforms.flip_joints`` does).  Boxes and polygons are in
COCO's *pixel-edge* coordinates (pixel ``j`` spans ``[j, j + 1)``), so a flip maps a box
``x -> W - x - w`` and polygon points ``x -> W - x``.  ``mirror_scene`` + ``flip_annotations`` state
this as code, and the tests check ``render(mirror(scene)) == fliplr(render(scene))`` bit for bit.

Exactness: every geometric coordinate is snapped to a 1/8-pixel grid (never exactly on a half pixel, so
"the pixel under a joint" is unambiguous), which makes ``W - 1 - x`` exact in float32; the rasterizer then
only ever uses sign-symmetric IEEE operations of ``x`` differences, and background, noise and blur are
either stored in the scene (and flipped by ``mirror_scene``) or computed with mirror-paired sums.

Modules: ``config`` (knobs, keypoint set), ``scene`` (the frozen scene description, mirroring),
``body`` (one person), ``sampler`` (a whole scene), ``render``, ``annotate`` (COCO records), ``write``
(the dataset on disk).
"""

from __future__ import annotations

from hhrnet.data.synthetic.annotate import annotate_scene, coco_categories, flip_annotations, mask_to_rle
from hhrnet.data.synthetic.config import BODY_JOINTS, CROWD_SCENES, FORMAT_VERSION, KEYPOINTS, SPLITS, SyntheticConfig
from hhrnet.data.synthetic.render import render_scene
from hhrnet.data.synthetic.sampler import sample_scene
from hhrnet.data.synthetic.scene import Joint, Person, Primitive, Render, Scene, mirror_scene
from hhrnet.data.synthetic.write import SyntheticDataset, dataset_paths, generate, image_rng

__all__ = [
    "KEYPOINTS", "BODY_JOINTS", "CROWD_SCENES", "SPLITS", "FORMAT_VERSION",
    "SyntheticConfig", "Primitive", "Joint", "Person", "Scene", "Render",
    "mirror_scene", "render_scene", "sample_scene", "annotate_scene", "flip_annotations", "mask_to_rle",
    "coco_categories", "SyntheticDataset", "dataset_paths", "image_rng", "generate",
]
