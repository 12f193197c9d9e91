"""Backbone pretraining (limb segmentation): targets, the loop through the engine, and reuse by a row."""

from __future__ import annotations

import numpy as np
import torch

from hhrnet.checkpoints import BACKBONE_PREFIXES, load_pretrained_backbone, read_checkpoint
from hhrnet.config import preset
from hhrnet.model import HigherHRNet
from hhrnet.pretrain import LimbLoss, decode_joints, limb_targets, pretrain, save_backbone
from hhrnet.targets import joint_tag_targets


def test_decode_joints_inverts_the_packed_tag_targets():
    rng = np.random.default_rng(0)
    joints = np.concatenate([rng.uniform(-4, 20, (3, 17, 2)), rng.integers(0, 3, (3, 17, 1))], axis=-1)
    packed = torch.from_numpy(joint_tag_targets(joints, 16, max_people=5))[None]
    xy, seen = decode_joints(packed, 16, 17)
    x, y, v = np.trunc(joints[..., 0]).astype(int), np.trunc(joints[..., 1]).astype(int), joints[..., 2]
    counted = (v > 0) & (x >= 0) & (y >= 0) & (x < 16) & (y < 16)  # the targets' rule: truncate, then clip
    assert np.array_equal(seen[0, :3].numpy(), counted) and not seen[0, 3:].any()
    assert np.array_equal(xy[0, :3][seen[0, :3]].numpy(), np.stack([x, y], -1)[counted])


def test_limb_targets_mark_pixels_within_the_radius_of_counted_limbs_only():
    joints = np.zeros((2, 3, 3))
    joints[0] = [[2, 5, 2], [9, 5, 2], [9, 12, 0]]  # limb 0-1 counted; joint 2 is not labelled
    joints[1] = [[20, 20, 2], [20, 20, 2], [20, 20, 2]]  # outside the 16-pixel map
    packed = torch.from_numpy(joint_tag_targets(joints, 16, max_people=4))[None]
    maps = limb_targets(packed, 16, [(0, 1), (1, 2)], num_joints=3, radius=1.0)[0]
    expected = np.zeros((16, 16))
    expected[4:7, 2:10] = 1   # rows y = 4..6 along x = 2..9 (distance <= 1 from the segment)
    expected[5, [1, 10]] = 1  # the round caps; (1, 4) is sqrt(2) from the end point, outside
    assert np.array_equal(maps[0].numpy(), expected)
    assert maps[1].sum() == 0


def test_pretrained_backbone_initialises_every_backbone_tensor_of_a_row(tmp_path, coco_root):
    cfg = preset("w32_512").override(**{
        "input_size": 128, "model.width": 4, "model.stem_channels": 8, "model.layer1_planes": 8,
        "model.layer1_blocks": 1, "model.stage_modules": [1, 1, 1], "model.blocks_per_branch": 1,
        "model.num_basic_blocks": 1, "train.init": "he", "train.batch_size": 2, "train.max_iters": 2,
        "train.workers": 0, "train.data_root": str(coco_root), "train.train_split": "val"})
    skeleton = [(a - 1, b - 1) for a, b in ((16, 14), (14, 12), (6, 12), (6, 8), (8, 10))]
    checkpoint = pretrain(cfg, tmp_path / "pre", skeleton, progress=False)
    empty = LimbLoss(skeleton, 17)([torch.zeros(1, 5, 8, 8)], [], [torch.ones(1, 8, 8)],
                                   [torch.zeros(1, 30, 17, 2, dtype=torch.int64)])
    assert abs(empty.total.item() - np.log(2)) < 1e-6  # zero logits against an empty target
    backbone = save_backbone(checkpoint, tmp_path / "backbone.pth")
    state, _ = read_checkpoint(backbone)
    assert state and all(k.startswith(BACKBONE_PREFIXES) and (v.dtype == torch.float16 or not v.is_floating_point())
                         for k, v in state.items())
    row = HigherHRNet(cfg.model)
    loaded, left = load_pretrained_backbone(row, backbone)
    assert left == 0 and loaded == len(state)
    assert torch.equal(row.conv1.weight, state["conv1.weight"].float())
